import { createBackendWorker, type BackendWorkerOptions, type Worker } from '@kiln/worker';
import { createContainerdExecutor } from './containerd/containerd-executor.js';

export type ContainerdWorkerOptions = BackendWorkerOptions;

/**
 * The containerd worker: the base worker over a directory snapshotter and
 * the containerd executor, which cannot run processes yet (exec ops fail
 * with UnimplementedError; source and file ops work).
 */
export function createContainerdWorker(options: ContainerdWorkerOptions): Worker {
  return createBackendWorker(options, 'containerd', createContainerdExecutor(), 'containerd');
}
