import path from 'node:path';
import { InvalidArgumentError, type Logger } from '@kiln/common';
import { createDirectorySnapshotter } from '@kiln/snapshotter';
import { createWorker, type PublishFn, type SessionFiles, type Worker, type WorkerPlatform } from '@kiln/worker';
import { createContainerdExecutor } from './containerd/containerd-executor.js';

export interface ContainerdWorkerOptions {
  /** Unique worker id. */
  id: string;
  /** State directory: snapshots under `<root>/snapshots`. */
  root: string;
  sessions: SessionFiles;
  publish: PublishFn;
  logger?: Logger;
  /** Default: the host's platform. */
  platforms?: WorkerPlatform[];
  labels?: Record<string, string>;
  /** See WorkerOptions.progressIntervalMs. */
  progressIntervalMs?: number;
}

/**
 * The containerd worker: the base worker over a directory snapshotter and
 * the containerd executor, which cannot run processes yet (exec ops fail
 * with UnimplementedError; source and file ops work).
 */
export function createContainerdWorker(options: ContainerdWorkerOptions): Worker {
  if (!options.root) throw new InvalidArgumentError('root must be set', 'root');
  return createWorker({
    id: options.id,
    backend: 'containerd',
    snapshotter: createDirectorySnapshotter({ root: path.join(options.root, 'snapshots') }),
    executor: createContainerdExecutor(),
    sessions: options.sessions,
    publish: options.publish,
    logger: options.logger,
    platforms: options.platforms,
    labels: { 'kiln.executor': 'containerd', 'kiln.snapshotter': 'directory', ...options.labels },
    progressIntervalMs: options.progressIntervalMs,
  });
}
