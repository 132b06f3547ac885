import { runWorkerConformance } from '@kiln/worker/testing';
import { createContainerdWorker } from './containerd-worker.js';

runWorkerConformance(
  'containerd',
  ({ root, sessions, publish, logger }) => createContainerdWorker({ id: 'containerd-test', root, sessions, publish, logger }),
  // The containerd executor is a stub until the exec issue lands.
  { exec: 'unimplemented' },
);
