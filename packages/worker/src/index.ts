export type { ExecIO, ExecMount, ExecProcess, ExecResult, ExecRlimit, ExecSpec, Executor } from './executor.js';
export {
  compileWorkerOptions,
  createWorker,
  hostPlatform,
  SUPPORTED_OPS,
  type CompiledWorkerOptions,
  type ImportedLayer,
  type PathSelector,
  type PublishFn,
  type RefUsage,
  type RunRequest,
  type RunResult,
  ENTITLEMENTS,
  type Entitlement,
  type SessionCredentials,
  type SessionFiles,
  type SessionSecrets,
  type SessionSsh,
  type WorkerSession,
  type Worker,
  type WorkerBackend,
  type WorkerDescription,
  type WorkerOptions,
  type WorkerPlatform,
} from './worker.js';
export { createWorkerServiceImpl } from './rpc/worker-service.js';
export { emulatedPlatforms, BINFMT_MISC_DIR } from './emulation.js';
export { DEFAULT_PATH } from './ops/exec-op.js';
export { createBackendWorker, type BackendSnapshotter, type BackendWorkerOptions } from './backend.js';
export { openRetainedRefs, type RetainedRefs } from './retained-refs.js';
export { DEFAULT_CAPABILITIES, ociSpec, privilegedCapabilities, serializeOciSpec, STANDARD_MOUNTS, type OciMount } from './exec/oci/oci-spec.js';
export { DENIED_SYSCALLS, defaultSeccompProfile } from './exec/oci/seccomp.js';
export { missingMountPoints, removeMountPointStubs } from './exec/oci/mount-stubs.js';
export { DEFAULT_BRIDGE, DEFAULT_CNI_PLUGIN_DIR, DEFAULT_POOL_SIZE, DEFAULT_SUBNET, NETWORK_MODES, type NetworkMode, type NetworkOptions } from './network/options.js';
export { OP_KINDS, isOpKind, opKind, type OpKind } from '@kiln/llb';
