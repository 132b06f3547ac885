import path from 'node:path';
import { createBackendWorker, type BackendWorkerOptions, type Worker } from '@kiln/worker';
import { createContainerdClient } from './containerd/client.js';
import { createRegistryClient } from '@kiln/registry';
import { createContainerdExecutor } from './containerd/containerd-executor.js';
import { createContainerdSnapshotter } from './containerd/containerd-snapshotter.js';
import { ImageRecorder } from './containerd/image-recorder.js';

/** containerd's socket where Debian's package (and Kubernetes nodes) run it. */
export const DEFAULT_CONTAINERD_ADDRESS = '/run/containerd/containerd.sock';

export interface ContainerdWorkerOptions extends BackendWorkerOptions {
  /** containerd's gRPC socket. Default /run/containerd/containerd.sock. */
  containerdAddress?: string;
  /** containerd namespace of everything the worker makes. Default "kiln". */
  containerdNamespace?: string;
}

/**
 * The containerd worker: the base worker over containerd's overlayfs
 * snapshotter (step trees, each held by a lease), running exec ops as
 * containerd tasks (runc shim v2, the step's root snapshot as the task's
 * rootfs mounts) in the `kiln` namespace of the node's containerd; pulled
 * images go into containerd's content store and image list. FIFOs go under
 * `<root>/containerd`; the containers and leases it makes carry
 * `kiln.owner=<root>`, so a worker restarted on the same root reaps what the
 * killed one left, and only that.
 */
export function createContainerdWorker(options: ContainerdWorkerOptions): Worker {
  const { containerdAddress, containerdNamespace, ...rest } = options;
  const client = createContainerdClient({ address: containerdAddress ?? DEFAULT_CONTAINERD_ADDRESS, namespace: containerdNamespace });
  // Pulled images land in containerd's content store and image list too (`ctr -n kiln images ls`).
  const images = new ImageRecorder({ client, owner: path.resolve(options.root), logger: options.logger });
  const registry = images.wrap(rest.registry ?? createRegistryClient({}));
  // Step trees are containerd's overlayfs snapshots, mounted under <root>/containerd/mnt.
  const snapshotter = createContainerdSnapshotter({
    client,
    owner: path.resolve(options.root),
    mountDir: path.join(options.root, 'containerd', 'mnt'),
    // A killed worker's tasks still have its active snapshots mounted as their rootfs: they are killed and deleted first.
    beforeReap: () => executor.reapStale(),
    logger: options.logger,
  });
  // Exec hands a step's root snapshot to containerd as mounts (the shim mounts it), not as a host path.
  const executor = createContainerdExecutor({ client, stateDir: path.join(options.root, 'containerd'), owner: path.resolve(options.root), snapshots: snapshotter, logger: options.logger });
  const worker = createBackendWorker({ ...rest, registry }, 'containerd', executor, 'containerd', { snapshotter, name: 'containerd-overlayfs' });
  const close = worker.close.bind(worker);
  worker.close = async () => {
    try {
      await close();
    } finally {
      client.close();
    }
  };
  return worker;
}
