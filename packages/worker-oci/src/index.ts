export { createOciWorker, type OciWorkerOptions } from './oci-worker.js';
export { createRuncExecutor, RuncExecutor, type RuncExecutorOptions } from './runc/runc-executor.js';
