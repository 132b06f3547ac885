import path from 'node:path';
import { InvalidArgumentError, type Logger } from '@kiln/common';
import type { RegistryClient } from '@kiln/registry';
import { createDirectorySnapshotter } from '@kiln/snapshotter';
import type { Executor } from './executor.js';
import { createWorker, type PublishFn, type SessionFiles, type Worker, type WorkerBackend, type WorkerPlatform } from './worker.js';

/** What every backend tier (worker-oci, worker-containerd) takes; a backend adds its executor's options. */
export interface BackendWorkerOptions {
  /** Unique worker id. */
  id: string;
  /** State directory: snapshots under `<root>/snapshots`; the backend may add its own folders. */
  root: string;
  sessions: SessionFiles;
  publish: PublishFn;
  logger?: Logger;
  /** Default: the host's platform. */
  platforms?: WorkerPlatform[];
  labels?: Record<string, string>;
  /** See WorkerOptions.progressIntervalMs. */
  progressIntervalMs?: number;
  /** See WorkerOptions.registry. */
  registry?: RegistryClient;
}

/** The base worker over a directory snapshotter under `root`, running exec ops with `executor`. */
export function createBackendWorker(options: BackendWorkerOptions, backend: WorkerBackend, executor: Executor, executorName: string): Worker {
  if (!options.root) throw new InvalidArgumentError('root must be set', 'root');
  return createWorker({
    id: options.id,
    backend,
    snapshotter: createDirectorySnapshotter({ root: path.join(options.root, 'snapshots') }),
    executor,
    sessions: options.sessions,
    publish: options.publish,
    logger: options.logger,
    platforms: options.platforms,
    labels: { 'kiln.executor': executorName, 'kiln.snapshotter': 'directory', ...options.labels },
    progressIntervalMs: options.progressIntervalMs,
    registry: options.registry,
  });
}
