import path from 'node:path';
import { InvalidArgumentError, type Logger } from '@kiln/common';
import { createDirectorySnapshotter } from '@kiln/snapshotter';
import { createWorker, type PublishFn, type SessionFiles, type Worker, type WorkerPlatform } from '@kiln/worker';
import { createRuncExecutor } from './runc/runc-executor.js';

export interface OciWorkerOptions {
  /** Unique worker id. */
  id: string;
  /** State directory: snapshots under `<root>/snapshots`, runc state and bundles under `<root>/runc`. */
  root: string;
  sessions: SessionFiles;
  publish: PublishFn;
  logger?: Logger;
  /** Default: the host's platform. */
  platforms?: WorkerPlatform[];
  labels?: Record<string, string>;
  /** The runc binary. Default "runc" (from PATH). */
  runcPath?: string;
  /** See WorkerOptions.progressIntervalMs. */
  progressIntervalMs?: number;
}

/** The OCI worker: the base worker over a directory snapshotter and runc. */
export function createOciWorker(options: OciWorkerOptions): Worker {
  if (!options.root) throw new InvalidArgumentError('root must be set', 'root');
  return createWorker({
    id: options.id,
    backend: 'oci',
    snapshotter: createDirectorySnapshotter({ root: path.join(options.root, 'snapshots') }),
    executor: createRuncExecutor({ stateDir: path.join(options.root, 'runc'), runcPath: options.runcPath, logger: options.logger }),
    sessions: options.sessions,
    publish: options.publish,
    logger: options.logger,
    platforms: options.platforms,
    labels: { 'kiln.executor': 'runc', 'kiln.snapshotter': 'directory', ...options.labels },
    progressIntervalMs: options.progressIntervalMs,
  });
}
