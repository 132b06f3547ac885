export { createContainerdWorker, DEFAULT_CONTAINERD_ADDRESS, type ContainerdWorkerOptions } from './containerd-worker.js';
export { ContainerdExecutor, createContainerdExecutor, OCI_SPEC_TYPE_URL, OWNER_LABEL, type ContainerdExecutorOptions } from './containerd/containerd-executor.js';
export { createContainerdClient, type ContainerdClient, type ContainerdClientOptions, type ContainerdCallOptions } from './containerd/client.js';
