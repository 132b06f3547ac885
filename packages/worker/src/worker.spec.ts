import { createDirectorySnapshotter } from '@kiln/snapshotter';
import path from 'node:path';
import { createWorker } from './worker.js';
import { FakeExecutor, runWorkerConformance } from './testing/index.js';

runWorkerConformance('base worker (directory snapshotter, fake executor)', ({ root, sessions, publish, logger }) =>
  createWorker({
    id: 'test-worker',
    backend: 'oci',
    snapshotter: createDirectorySnapshotter({ root: path.join(root, 'snapshots') }),
    executor: new FakeExecutor(),
    sessions,
    publish,
    logger,
  }),
);
