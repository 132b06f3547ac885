import path from 'node:path';
import { createBackendWorker, type BackendWorkerOptions, type Worker } from '@kiln/worker';
import { createRuncExecutor } from './runc/runc-executor.js';

export interface OciWorkerOptions extends BackendWorkerOptions {
  /** The runc binary. Default "runc" (from PATH). Runc state and bundles go under `<root>/runc`. */
  runcPath?: string;
}

/** The OCI worker: the base worker over a directory snapshotter and runc. */
export function createOciWorker(options: OciWorkerOptions): Worker {
  const executor = createRuncExecutor({ stateDir: path.join(options.root, 'runc'), runcPath: options.runcPath, logger: options.logger });
  return createBackendWorker(options, 'oci', executor, 'runc');
}
