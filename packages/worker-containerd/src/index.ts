export { createContainerdWorker, type ContainerdWorkerOptions } from './containerd-worker.js';
export { ContainerdExecutor, createContainerdExecutor } from './containerd/containerd-executor.js';
