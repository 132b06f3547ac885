export { createOciWorker, type OciWorkerOptions } from './oci-worker.js';
export { createRuncExecutor, RuncExecutor, type RuncExecutorOptions } from './runc/runc-executor.js';
export { DEFAULT_CAPABILITIES, ociSpec, privilegedCapabilities, serializeOciSpec, STANDARD_MOUNTS, type OciMount } from './runc/oci-spec.js';
export { DENIED_SYSCALLS, defaultSeccompProfile } from './runc/seccomp.js';
