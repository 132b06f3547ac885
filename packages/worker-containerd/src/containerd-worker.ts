import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { silentLogger } from '@kiln/common';
import { createBackendWorker, openRetainedRefs, type BackendWorkerOptions, type Worker } from '@kiln/worker';
import { createContainerdClient } from './containerd/client.js';
import { createRegistryClient } from '@kiln/registry';
import { createContainerdExecutor } from './containerd/containerd-executor.js';
import { createContainerdSnapshotter } from './containerd/containerd-snapshotter.js';
import { ImageRecorder } from './containerd/image-recorder.js';
import { ImageRefs, pulledImageName } from './containerd/image-refs.js';

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
 * images go into containerd's content store and image list, and leave it
 * once the worker holds no ref of them. FIFOs go under `<root>/containerd`;
 * the containers and leases it makes carry `kiln.owner=<root>`, so a worker
 * restarted on the same root reaps what the killed one left, and only that.
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
  // containerd's image list follows the refs the worker holds: an image whose last ref went (kiln prune, the GC) is removed.
  mkdirSync(options.root, { recursive: true });
  const retainedRefs = rest.retainedRefs ?? openRetainedRefs(path.join(options.root, 'retained-refs.db'));
  const logger = options.logger ?? silentLogger();
  const imageRefs = new ImageRefs({ file: path.join(options.root, 'containerd', 'image-refs.json'), forget: (name) => images.forget(name), logger });
  const onRefGone = (ref: string) => {
    imageRefs.gone(ref);
    rest.onRefGone?.(ref);
  };
  const worker = createBackendWorker({ ...rest, registry, retainedRefs, onRefGone }, 'containerd', executor, 'containerd', { snapshotter, name: 'containerd-overlayfs' });
  // Refs that died with an earlier process: the retentions restored at start are the live ones.
  imageRefs
    .reconcile(new Set(retainedRefs.persisted().map((r) => r.ref)), () => images.recorded())
    .catch((err: unknown) => logger.warn({ err }, 'failed to remove images no ref holds from containerd'));
  const run = worker.run.bind(worker);
  const release = worker.release.bind(worker);
  const drop = worker.drop.bind(worker);
  const close = worker.close.bind(worker);
  worker.run = (req) => {
    const name = pulledImageName(req.op);
    return name === undefined ? run(req) : imageRefs.pull(name, () => run(req));
  };
  // Release and Drop answer once containerd's records of the images they freed are gone.
  worker.release = async (refs) => {
    await release(refs);
    await imageRefs.settled();
  };
  worker.drop = async (refs, owner) => {
    await drop(refs, owner);
    await imageRefs.settled();
  };
  worker.close = async () => {
    try {
      await close();
      await executor.close();
      await imageRefs.settled();
    } finally {
      client.close();
    }
  };
  return worker;
}
