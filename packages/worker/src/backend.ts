import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { openRetainedRefs } from './retained-refs.js';
import { InvalidArgumentError } from '@kiln/common';
import { createDirectorySnapshotter } from '@kiln/snapshotter';
import type { Executor } from './executor.js';
import { createWorker, type Worker, type WorkerBackend, type WorkerOptions } from './worker.js';

/**
 * What every backend tier (worker-oci, worker-containerd) takes: the worker
 * options (see WorkerOptions) minus what the backend supplies itself, plus the
 * state directory; a backend adds its executor's options.
 */
export interface BackendWorkerOptions extends Omit<WorkerOptions, 'backend' | 'snapshotter' | 'executor'> {
  /** State directory: snapshots under `<root>/snapshots`, layer cache under `<root>/layers`, exec state (cache mounts, ...) under `<root>/exec` (unless `stateDir` says otherwise); the backend may add its own folders. */
  root: string;
}

/** The base worker over a directory snapshotter under `root`, running exec ops with `executor`. */
export function createBackendWorker(options: BackendWorkerOptions, backend: WorkerBackend, executor: Executor, executorName: string): Worker {
  if (!options.root) throw new InvalidArgumentError('root must be set', 'root');
  const { root, ...rest } = options;
  mkdirSync(root, { recursive: true });
  return createWorker({
    ...rest,
    backend,
    stateDir: options.stateDir ?? root,
    snapshotter: createDirectorySnapshotter({ root: path.join(root, 'snapshots') }),
    retainedRefs: rest.retainedRefs ?? openRetainedRefs(path.join(root, 'retained-refs.db')),
    executor,
    labels: { 'kiln.executor': executorName, 'kiln.snapshotter': 'directory', ...options.labels },
  });
}
