import { createHash, randomBytes } from 'node:crypto';
import { lstat, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { containerdSnapshots } from '@kiln/api';
import { KilnError, NotFoundError, silentLogger, type Logger } from '@kiln/common';
import { readFileInRoot, resolveInRoot, type ActiveSnapshot, type PrepareOptions, type SnapshotInfo, type Snapshotter, type SnapshotUsage, type SnapshotView, type UnmountedTree } from '@kiln/snapshotter';
import { hasCode, type ContainerdClient } from './client.js';
import { OWNER_LABEL } from './containerd-executor.js';
import { LayeredTree, OpaqueDirCache, OpaqueDirsUnknown } from './layered-tree.js';
import {
  layersOfMounts,
  mountPointsUnder,
  mountSnapshot,
  overlayExtraOptions,
  ownDir,
  taskRootfsMounts,
  treeUsage,
  unmountSnapshot,
  viewMounts,
  type SnapshotMount,
} from './snapshot-mounts.js';

/** Label of Kiln's name for a committed snapshot (`commit`'s `label`, e.g. an image layer's chain id). */
export const SNAPSHOT_LABEL = 'kiln.label';
/** Label on active snapshots, views and their lease: the worker start that made them (crash reaping removes other starts'). */
export const BOOT_LABEL = 'kiln.boot';
/**
 * Owner label of the leases this snapshotter (and the image recorder) makes:
 * not `kiln.owner`, whose leases the executor deletes at start (its runs'),
 * while these must outlive a restart.
 */
export const HOLDER_LABEL = 'kiln.holder';
/** Label on a committed snapshot Kiln removed while a child or view still needed it (it goes with the last of them). */
const REMOVED_LABEL = 'kiln.removed';

export interface ContainerdSnapshotterOptions {
  client: ContainerdClient;
  /** containerd snapshotter. Default "overlayfs". */
  snapshotter?: string;
  /** The worker's `kiln.owner` label value: which snapshots are this snapshotter's (those of other workers are never touched). */
  owner: string;
  /** Where overlays are mounted for the worker to read and write them. */
  mountDir: string;
  /**
   * Awaited at open, before earlier starts' snapshots are reaped: the
   * executor's reaping of a killed worker's tasks, whose shims still have
   * those snapshots mounted as their rootfs.
   */
  beforeReap?: () => Promise<void>;
  logger?: Logger;
}

/** A committed snapshot's tree as overlay layers, top first: its own dir, then its parents'. */
interface Layers {
  dirs: string[];
}

/** A shared read-only mount of one committed snapshot (views of one id share it). */
interface ViewMount {
  id: string;
  count: number;
  /** Where the tree is: the host mount, or the one dir of a single-layer snapshot. */
  at: Promise<ViewTree>;
  /** `at` once settled. */
  tree?: ViewTree;
}

interface ViewTree {
  path: string;
  mounted: boolean;
  /** The mounts of the tree, for a task's rootfs. */
  mounts: SnapshotMount[];
}

interface Active {
  path: string;
  mounted: boolean;
  /** Reads of the tree while Kiln has not mounted it (prepared with `deferMount`). */
  tree?: UnmountedTree;
  /** What containerd answered for it: the mounts a task's rootfs is made of. */
  mounts: SnapshotMount[];
  /** The snapshot's own (upper) dir, for usage. */
  own?: string;
  parent?: string;
}

/**
 * A snapshot given to a containerd task as its rootfs (`Tasks.Create`
 * `rootfs`): containerd's shim mounts it on the bundle, not Kiln.
 */
export interface TaskRootfs {
  /** The snapshot's mounts as containerd returned them (overlay options made plain, see `taskRootfsMounts`). */
  mounts: SnapshotMount[];
  /**
   * The host directory holding what the task writes, where runtime-made
   * mount-point stubs are removed once the task is gone: the active
   * snapshot's own (upper) dir; for a read-only view, Kiln's host mount.
   */
  stubRoot: string;
  /**
   * Unmounts Kiln's host mount of an active snapshot, so the shim's overlay
   * is the only one on its upper dir (two mounts sharing one upper dir see
   * each other's changes undefined); the host path is not a tree any more,
   * and commit/remove work as usual. A no-op for a view (a read-only overlay
   * may be mounted twice) and for a bind mount (nothing mounted).
   */
  detachHost(): Promise<void>;
  /** Set while Kiln has not mounted the tree (an active prepared with `deferMount`): its reads, from the layers. */
  tree?: Pick<UnmountedTree, 'lookup'>;
}

/**
 * Kiln's Snapshotter over containerd's snapshots service (overlayfs by
 * default), so step trees live in the node's containerd, not in Kiln's
 * own store:
 *
 * - names: `kiln/<owner hash>/active/<key>` for active snapshots, `kiln/<owner
 *   hash>/<id>` for committed ones, `.../view/<random>` for views; each
 *   carries `kiln.owner`, active ones and views `kiln.boot` too.
 * - leases: every active snapshot and view is made under this start's lease
 *   (`kiln.boot` label); every committed snapshot under a lease of its own,
 *   deleted (with a synchronous GC) when Kiln removes it. A committed
 *   snapshot still needed by a child or view is labelled `kiln.removed` and
 *   removed with the last of them.
 * - trees: containerd answers with mounts; overlays are mounted under
 *   `mountDir`, a bind mount is its source directory as is.
 * - at open: leftover mounts under `mountDir` are unmounted, and earlier
 *   starts' active snapshots, views and leases are removed (a killed
 *   worker's), as are removed snapshots nothing needs any more.
 */
export class ContainerdSnapshotter implements Snapshotter {
  private readonly client: ContainerdClient;
  private readonly snapshotter: string;
  private readonly prefix: string;
  private readonly boot = randomBytes(6).toString('hex');
  private readonly bootLease: string;
  private readonly logger: Logger;
  private readonly actives = new Map<string, Active>();
  /** Committed id -> its layer dirs, known from its active's mounts at commit or learnt once (see `layersOf`). */
  private readonly layers = new Map<string, Layers>();
  /** Options of containerd's overlay mounts besides the dirs (e.g. `index=off`), for the views Kiln mounts itself. */
  private overlayOptions: string[] = [];
  /** Open views, changes and usage walks per committed id: such an id is not removed until they end. */
  private readonly pins = new Map<string, number>();
  /** Committed ids Kiln removed while pinned: removed at their last unpin. */
  private readonly removedWhilePinned = new Set<string>();
  /** The shared view mount of each committed id that has open views. */
  private readonly viewMounts = new Map<string, ViewMount>();
  private viewCounter = 0;
  /**
   * Keys of this start's active snapshots that were committed: callers
   * remove an op's active keys unconditionally once it ends (a no-op after a
   * commit), which would otherwise cost three calls to containerd that all
   * answer not found.
   */
  private readonly committedKeys = new Set<string>();
  private opened: Promise<void> | undefined;
  private closed = false;
  /** Opaque dirs of the layers unmounted trees were read through (see `LayeredTree`). */
  private readonly opaqueDirs = new OpaqueDirCache();

  constructor(private readonly opts: ContainerdSnapshotterOptions) {
    this.client = opts.client;
    this.snapshotter = opts.snapshotter ?? 'overlayfs';
    const ownerHash = createHash('sha256').update(opts.owner).digest('hex').slice(0, 12);
    this.prefix = `kiln/${ownerHash}/`;
    this.bootLease = `kiln-${ownerHash}-boot-${this.boot}`;
    this.logger = (opts.logger ?? silentLogger()).child({ component: 'containerd-snapshotter' });
  }

  private activeName(key: string): string {
    return `${this.prefix}active/${key}`;
  }

  private committedName(id: string): string {
    return `${this.prefix}${id}`;
  }

  private committedLease(id: string): string {
    return `kiln-${this.prefix.split('/')[1]}-${id}`;
  }

  private get ownerFilter(): string {
    return `labels."${OWNER_LABEL}"==${JSON.stringify(this.opts.owner)}`;
  }

  /** Reaps what earlier starts left and makes this start's lease; once, before anything else. */
  private ready(): Promise<void> {
    if (this.closed) return Promise.reject(new KilnError('failed_precondition', 'the containerd snapshotter is closed'));
    this.opened ??= this.open().catch((err: unknown) => {
      this.opened = undefined; // containerd may come back: the next call tries again
      throw err;
    });
    return this.opened;
  }

  private async open(): Promise<void> {
    await this.client.namespaces.create({ namespace: { name: this.client.namespace, labels: {} } }).catch((err: unknown) => {
      if (!hasCode(err, 'already_exists')) throw err;
    });
    await mkdir(this.opts.mountDir, { recursive: true });
    for (const mp of mountPointsUnder(this.opts.mountDir)) await unmountSnapshot(mp);
    await this.opts.beforeReap?.();
    await this.reapEarlierStarts();
    await this.client.leases.create({ id: this.bootLease, labels: { [HOLDER_LABEL]: this.opts.owner, [BOOT_LABEL]: this.boot } });
  }

  /**
   * Removes the active snapshots and views of earlier starts of this owner
   * (children first), their leases, and removed snapshots nothing needs now.
   */
  private async reapEarlierStarts(): Promise<void> {
    const infos = await this.listOwn();
    const stale = infos.filter((i) => i.kind !== containerdSnapshots.Kind.COMMITTED && i.labels[BOOT_LABEL] !== this.boot);
    let removed = 0;
    // Deepest first: a snapshot's children are removed before it.
    const depth = (name: string): number => {
      let d = 0;
      for (let p = infos.find((i) => i.name === name)?.parent; p; p = infos.find((i) => i.name === p)?.parent) d++;
      return d;
    };
    for (const s of stale.sort((a, b) => depth(b.name) - depth(a.name))) {
      await this.client.snapshots.remove({ snapshotter: this.snapshotter, key: s.name }).then(
        () => removed++,
        (err: unknown) => this.logger.warn({ err, snapshot: s.name }, 'failed to remove a snapshot an earlier worker left'),
      );
    }
    const { leases } = await this.client.leases.list({ filters: [`labels."${HOLDER_LABEL}"==${JSON.stringify(this.opts.owner)},labels."${BOOT_LABEL}"!=${JSON.stringify(this.boot)}`] });
    for (const l of leases.filter((x) => x.labels[BOOT_LABEL])) await this.client.leases.delete({ id: l.id }).catch(() => undefined);
    for (const s of infos.filter((i) => i.labels[REMOVED_LABEL])) await this.collect(s.name, { awaitSweep: false });
    if (removed + leases.length > 0) this.logger.info({ snapshots: removed, leases: leases.length }, 'removed snapshots and leases an earlier worker left in containerd');
  }

  private async listOwn(): Promise<containerdSnapshots.Info[]> {
    const out: containerdSnapshots.Info[] = [];
    for await (const batch of this.client.snapshots.list({ snapshotter: this.snapshotter, filters: [this.ownerFilter] })) out.push(...batch.info);
    return out.filter((i) => i.name.startsWith(this.prefix));
  }

  async prepare(key: string, parent?: string, opts: PrepareOptions = {}): Promise<ActiveSnapshot> {
    await this.ready();
    opts.signal?.throwIfAborted();
    if (this.actives.has(key)) throw new KilnError('already_exists', `snapshot ${key} already exists`);
    this.committedKeys.delete(key);
    const name = this.activeName(key);
    let mounts: SnapshotMount[];
    try {
      ({ mounts } = await this.client.snapshots.prepare(
        { snapshotter: this.snapshotter, key: name, parent: parent ? this.committedName(parent) : '', labels: { [OWNER_LABEL]: this.opts.owner, [BOOT_LABEL]: this.boot } },
        { lease: this.bootLease, signal: opts.signal },
      ));
    } catch (err) {
      if (hasCode(err, 'already_exists')) throw new KilnError('already_exists', `snapshot ${key} already exists`);
      if (hasCode(err, 'not_found')) throw new NotFoundError(`parent snapshot ${parent} not found`);
      throw err;
    }
    const extra = overlayExtraOptions(mounts);
    if (extra) this.overlayOptions = extra;
    const layers = opts.deferMount && mounts.length === 1 && mounts[0]!.type === 'overlay' ? layersOfMounts(mounts, 'active') : undefined;
    if (layers) {
      // Left unmounted: the task's shim mounts it as its rootfs; until then it is read from its layers.
      const active: Active = { path: this.mountPoint(`a-${key}`), mounted: false, mounts, own: ownDir(mounts), parent };
      active.tree = this.unmountedTree(active, layers.dirs);
      this.actives.set(key, active);
      return { key, path: active.path, unmounted: active.tree };
    }
    try {
      const at = await mountSnapshot(mounts, this.mountPoint(`a-${key}`));
      this.actives.set(key, { ...at, mounts, own: ownDir(mounts), parent });
      return { key, path: at.path };
    } catch (err) {
      await this.client.snapshots.remove({ snapshotter: this.snapshotter, key: name }).catch(() => undefined);
      throw err;
    }
  }

  /**
   * Reads of an active snapshot left unmounted, from its layer dirs (top
   * first). Where the opaque dirs of a layer cannot be read (no getfattr),
   * the tree is mounted and read on the host instead.
   */
  private unmountedTree(active: Active, dirs: string[]): UnmountedTree {
    const layered = new LayeredTree(dirs, this.opaqueDirs.isOpaque);
    const mount = async (): Promise<void> => {
      if (active.mounted) return;
      const at = await mountSnapshot(active.mounts, active.path);
      active.mounted = at.mounted;
    };
    const read = async <T>(fromLayers: () => Promise<T>, onHost: () => Promise<T>): Promise<T> => {
      if (!active.mounted) {
        try {
          return await fromLayers();
        } catch (err) {
          if (!(err instanceof OpaqueDirsUnknown)) throw err;
          this.logger.debug({ err }, 'reading a root through its mount');
          await mount();
        }
      }
      return onHost();
    };
    return {
      mount,
      readFile: (p) =>
        read(
          () => layered.readFile(p),
          async () => readFileInRoot(active.path, p),
        ),
      lookup: (p) =>
        read(
          async () => {
            const { path: at, entry } = await layered.lookup(p);
            return { path: at, exists: entry !== undefined, isDirectory: entry?.stats.isDirectory() ?? false };
          },
          async () => {
            const host = await resolveInRoot(active.path, p, { followFinalSymlink: true });
            const st = await lstat(host).catch(() => undefined);
            return { path: `/${path.relative(active.path, host)}`, exists: st !== undefined, isDirectory: st?.isDirectory() ?? false };
          },
        ),
    };
  }

  private mountPoint(name: string): string {
    // Keys are free text: the directory is named by a hash of the name.
    return path.join(this.opts.mountDir, createHash('sha256').update(name).digest('hex').slice(0, 32));
  }

  async commit(key: string, opts: { label?: string } = {}): Promise<string> {
    await this.ready();
    const active = this.actives.get(key);
    if (!active) throw new NotFoundError(`active snapshot ${key} not found`);
    if (opts.label !== undefined && (await this.byLabel(opts.label)) !== undefined) {
      throw new KilnError('already_exists', `a committed snapshot is already labelled ${opts.label}`);
    }
    const id = randomBytes(16).toString('hex');
    const lease = this.committedLease(id);
    const labels: Record<string, string> = { [OWNER_LABEL]: this.opts.owner };
    if (opts.label !== undefined) labels[SNAPSHOT_LABEL] = opts.label;
    await this.client.leases.create({ id: lease, labels: { [HOLDER_LABEL]: this.opts.owner } });
    try {
      if (active.mounted) await unmountSnapshot(active.path);
      active.mounted = false;
      await this.client.snapshots.commit({ snapshotter: this.snapshotter, name: this.committedName(id), key: this.activeName(key), labels }, { lease });
    } catch (err) {
      await this.client.leases.delete({ id: lease }).catch(() => undefined);
      throw err;
    }
    this.actives.delete(key);
    this.committedKeys.add(key);
    // containerd's overlayfs keeps a snapshot's directory when it commits it: the active's layers are the committed one's.
    const layers = layersOfMounts(active.mounts, 'active');
    if (layers) this.layers.set(id, layers);
    return id;
  }

  async byLabel(label: string): Promise<string | undefined> {
    await this.ready();
    const filter = `${this.ownerFilter},labels."${SNAPSHOT_LABEL}"==${JSON.stringify(label)}`;
    for await (const batch of this.client.snapshots.list({ snapshotter: this.snapshotter, filters: [filter] })) {
      for (const i of batch.info) {
        if (i.kind === containerdSnapshots.Kind.COMMITTED && i.name.startsWith(this.prefix) && !i.labels[REMOVED_LABEL]) return i.name.slice(this.prefix.length);
      }
    }
    return undefined;
  }

  /**
   * A read-only tree of committed `id`, mounted by Kiln from the snapshot's
   * layer dirs (as containerd's own view would mount them), shared by all
   * open views of `id`, without a view snapshot in containerd: `id` is
   * pinned instead, so Kiln removes it only after the last release.
   */
  async view(id: string): Promise<SnapshotView> {
    await this.ready();
    if (this.removedWhilePinned.has(id)) throw new NotFoundError(`snapshot ${id} not found`);
    this.pin(id);
    const entry = this.viewMounts.get(id) ?? this.openViewMount(id);
    entry.count++;
    let at: ViewTree;
    try {
      at = await entry.at;
    } catch (err) {
      entry.count--;
      await this.unpin(id);
      throw err;
    }
    let released: Promise<void> | undefined;
    return {
      id,
      path: at.path,
      release: () => (released ??= this.closeViewMount(entry).finally(() => this.unpin(id))),
    };
  }

  private openViewMount(id: string): ViewMount {
    const mount = async (): Promise<ViewTree> => {
      const { dirs } = await this.layersOf(id);
      const mounts = viewMounts(dirs, this.overlayOptions);
      const at = await mountSnapshot(mounts, this.mountPoint(`view/${id}/${++this.viewCounter}`));
      return { ...at, mounts };
    };
    const entry: ViewMount = { id, count: 0, at: mount() };
    void entry.at.then((tree) => (entry.tree = tree), () => undefined);
    this.viewMounts.set(id, entry);
    entry.at.catch(() => {
      if (this.viewMounts.get(id) === entry) this.viewMounts.delete(id);
    });
    return entry;
  }

  /** Unmounts a shared view mount with its last view; the mount point is gone when this resolves. */
  private async closeViewMount(entry: ViewMount): Promise<void> {
    if (--entry.count > 0) return;
    if (this.viewMounts.get(entry.id) === entry) this.viewMounts.delete(entry.id);
    const at = await entry.at;
    if (at.mounted) await unmountSnapshot(at.path);
  }

  private pin(id: string): void {
    this.pins.set(id, (this.pins.get(id) ?? 0) + 1);
  }

  /** Ends a pin of `id`; the last one carries out a removal Kiln asked for meanwhile (its directory gone when this resolves). */
  private async unpin(id: string): Promise<void> {
    const n = (this.pins.get(id) ?? 1) - 1;
    if (n > 0) {
      this.pins.set(id, n);
      return;
    }
    this.pins.delete(id);
    if (!this.removedWhilePinned.delete(id)) return;
    this.layers.delete(id);
    await this.client.leases.delete({ id: this.committedLease(id) }).catch((err: unknown) => {
      if (!hasCode(err, 'not_found')) throw err;
    });
    await this.collect(this.committedName(id), { awaitSweep: true });
  }

  /**
   * The layer dirs of committed `id` (not one Kiln removed): known since its
   * commit in this start, or learnt once from a view snapshot containerd
   * makes (and Kiln removes at once: a pin, not the view, keeps `id`).
   */
  private async layersOf(id: string): Promise<Layers> {
    if (this.removedWhilePinned.has(id)) throw new NotFoundError(`snapshot ${id} not found`);
    const known = this.layers.get(id);
    if (known) return known;
    const { name, mounts } = await this.openView(id);
    try {
      const layers = layersOfMounts(mounts, 'view');
      if (!layers) throw new KilnError('internal', `containerd returned unexpected mounts for a view of snapshot ${id}: ${JSON.stringify(mounts)}`);
      this.layers.set(id, layers);
      return layers;
    } finally {
      await this.client.snapshots.remove({ snapshotter: this.snapshotter, key: name }).catch(() => undefined);
    }
  }

  /**
   * The snapshot whose tree this start serves at host path `hostPath` (what
   * `prepare` or `view` returned), as a task's rootfs; undefined when the
   * path is not the root of one (e.g. a subdirectory of a snapshot).
   */
  taskRootfs(hostPath: string): TaskRootfs | undefined {
    for (const active of this.actives.values()) {
      if (active.path !== hostPath) continue;
      return {
        mounts: taskRootfsMounts(active.mounts),
        stubRoot: active.own ?? active.path,
        ...(active.tree && !active.mounted ? { tree: active.tree } : {}),
        detachHost: async () => {
          if (!active.mounted) return;
          await unmountSnapshot(active.path);
          active.mounted = false;
        },
      };
    }
    for (const entry of this.viewMounts.values()) {
      if (entry.tree?.path === hostPath) return { mounts: taskRootfsMounts(entry.tree.mounts), stubRoot: hostPath, detachHost: async () => undefined };
    }
    return undefined;
  }

  /** A view snapshot of committed `id` (not one Kiln removed) under this start's lease. */
  private async openView(id: string): Promise<{ name: string; mounts: SnapshotMount[] }> {
    const parent = this.committedName(id);
    const info = await this.client.snapshots.stat({ snapshotter: this.snapshotter, key: parent }).catch((err: unknown) => {
      if (hasCode(err, 'not_found')) return undefined;
      throw err;
    });
    if (!info?.info || info.info.kind !== containerdSnapshots.Kind.COMMITTED || info.info.labels[REMOVED_LABEL]) throw new NotFoundError(`snapshot ${id} not found`);
    const name = `${this.prefix}view/${randomBytes(8).toString('hex')}`;
    const { mounts } = await this.client.snapshots.view(
      { snapshotter: this.snapshotter, key: name, parent, labels: { [OWNER_LABEL]: this.opts.owner, [BOOT_LABEL]: this.boot } },
      { lease: this.bootLease },
    );
    return { name, mounts };
  }

  async remove(keyOrId: string): Promise<void> {
    await this.ready();
    const active = this.actives.get(keyOrId);
    if (active) {
      if (active.mounted) await unmountSnapshot(active.path);
      await this.client.snapshots.remove({ snapshotter: this.snapshotter, key: this.activeName(keyOrId) }).catch((err: unknown) => {
        if (!hasCode(err, 'not_found')) throw err;
      });
      this.actives.delete(keyOrId);
      if (active.parent) await this.collectIfRemoved(this.committedName(active.parent));
      return;
    }
    if (this.committedKeys.delete(keyOrId)) return;
    const name = this.committedName(keyOrId);
    const lease = this.committedLease(keyOrId);
    const pinned = this.pins.has(keyOrId);
    if (pinned && this.removedWhilePinned.has(keyOrId)) return;
    try {
      await this.client.snapshots.update({
        snapshotter: this.snapshotter,
        info: { name, labels: { [REMOVED_LABEL]: 'true' } },
        updateMask: { paths: [`labels.${REMOVED_LABEL}`, `labels.${SNAPSHOT_LABEL}`] },
      });
    } catch (err) {
      if (!hasCode(err, 'not_found')) throw err;
      if (pinned) return; // not a snapshot of Kiln's
    }
    // Hidden now (the label); open views keep its tree until the last goes (see `unpin`).
    if (pinned && this.pins.has(keyOrId)) {
      this.removedWhilePinned.add(keyOrId);
      return;
    }
    this.layers.delete(keyOrId);
    // Its children, if any, hold it now; without any it goes at once.
    await this.client.leases.delete({ id: lease }).catch((err: unknown) => {
      if (!hasCode(err, 'not_found')) throw err;
    });
    // Not found after its lease went: containerd's GC took it, and deletes its directory without Kiln waiting.
    await this.collect(name, { awaitSweep: false });
  }

  /**
   * Removes `name` if Kiln removed it; the parent after it when that was
   * removed too. Its directory is gone when this resolves (a view's
   * release promises it), also when containerd's GC swept it first.
   */
  private async collectIfRemoved(name: string): Promise<void> {
    let info: containerdSnapshots.StatSnapshotResponse;
    try {
      info = await this.client.snapshots.stat({ snapshotter: this.snapshotter, key: name });
    } catch (err) {
      // Swept by containerd's own GC since its last child or view went (see `collect`), which may
      // still be deleting its directory: wait for that.
      if (hasCode(err, 'not_found')) await this.collectGarbage();
      return;
    }
    if (info.info?.labels[REMOVED_LABEL]) await this.collect(name, { awaitSweep: true });
  }

  /**
   * Removes the snapshot `name` unless something still builds on it, then
   * its parent if Kiln removed that too; then runs containerd's GC, which
   * deletes the removed snapshots' directories before this returns.
   */
  private async collect(name: string, opts: { awaitSweep: boolean }): Promise<void> {
    let removed = 0;
    for (let next: string | undefined = name; next; ) {
      let info: containerdSnapshots.StatSnapshotResponse | undefined;
      try {
        info = await this.client.snapshots.stat({ snapshotter: this.snapshotter, key: next });
      } catch (err) {
        if (hasCode(err, 'not_found') && opts.awaitSweep) removed++; // swept by containerd's own GC (see below)
        break;
      }
      if (!info.info || (next !== name && !info.info.labels[REMOVED_LABEL])) break;
      try {
        await this.client.snapshots.remove({ snapshotter: this.snapshotter, key: next });
      } catch (err) {
        if (hasCode(err, 'failed_precondition')) break; // a child or view keeps it
        // Gone since the stat: once its last child or view went, nothing held it (its lease was deleted
        // when Kiln removed it), so containerd's own GC swept it, and that GC may still be deleting its
        // directory. Counted as removed: the synchronous GC below waits for the running one to finish.
        if (!hasCode(err, 'not_found')) throw err;
        if (!opts.awaitSweep) break;
      }
      removed++;
      if (next.startsWith(this.prefix)) await this.client.leases.delete({ id: this.committedLease(next.slice(this.prefix.length)) }).catch(() => undefined);
      next = info.info.parent || undefined;
    }
    if (removed > 0) await this.collectGarbage();
  }

  /** A synchronous GC of containerd (a lease deleted with `sync`): removed snapshots' directories are deleted before it answers. */
  private async collectGarbage(): Promise<void> {
    const id = `kiln-gc-${randomBytes(8).toString('hex')}`;
    await this.client.leases.create({ id, labels: { [HOLDER_LABEL]: this.opts.owner } });
    await this.client.leases.delete({ id, sync: true });
  }

  async usage(keyOrId: string): Promise<SnapshotUsage> {
    await this.ready();
    const active = this.actives.get(keyOrId);
    if (active?.own) return treeUsage(active.own);
    this.pin(keyOrId);
    try {
      return await treeUsage((await this.layersOf(keyOrId)).dirs[0]!);
    } finally {
      await this.unpin(keyOrId);
    }
  }

  /** The snapshot's own directory in overlay upper format (whiteouts as 0/0 devices): what it changed over its parent. */
  async changes(id: string): Promise<SnapshotView | undefined> {
    await this.ready();
    this.pin(id);
    let own: string;
    try {
      own = (await this.layersOf(id)).dirs[0]!;
    } catch (err) {
      await this.unpin(id);
      throw err;
    }
    let released: Promise<void> | undefined;
    return { id, path: own, release: () => (released ??= this.unpin(id)) };
  }

  async list(): Promise<SnapshotInfo[]> {
    await this.ready();
    const out: (SnapshotInfo & { sortKey: bigint })[] = [];
    for (const i of await this.listOwn()) {
      if (i.labels[REMOVED_LABEL]) continue;
      const created = (i.createdAt?.seconds ?? 0n) * 1_000_000_000n + BigInt(i.createdAt?.nanos ?? 0);
      const parent = i.parent.startsWith(this.prefix) ? i.parent.slice(this.prefix.length) : undefined;
      if (i.kind === containerdSnapshots.Kind.ACTIVE && i.name.startsWith(`${this.prefix}active/`)) {
        out.push({ kind: 'active', name: i.name.slice(`${this.prefix}active/`.length), parent, createdAtMs: Number(created / 1_000_000n), sortKey: created });
      } else if (i.kind === containerdSnapshots.Kind.COMMITTED) {
        const label = i.labels[SNAPSHOT_LABEL];
        out.push({ kind: 'committed', name: i.name.slice(this.prefix.length), parent, ...(label !== undefined ? { label } : {}), createdAtMs: Number(created / 1_000_000n), sortKey: created });
      }
    }
    return out.sort((a, b) => (a.sortKey < b.sortKey ? -1 : a.sortKey > b.sortKey ? 1 : 0)).map(({ sortKey: _, ...info }) => info);
  }

  /**
   * Unmounts what this start mounted, removes its active snapshots (a
   * reopen drops them anyway) and ends its lease (its views go with it).
   * Committed snapshots persist.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    const opened = this.opened;
    this.closed = true;
    this.viewMounts.clear();
    for (const mp of mountPointsUnder(this.opts.mountDir)) await unmountSnapshot(mp).catch(() => undefined);
    if (!opened || !(await opened.then(() => true, () => false))) return;
    try {
      for (const key of this.actives.keys()) await this.client.snapshots.remove({ snapshotter: this.snapshotter, key: this.activeName(key) }).catch(() => undefined);
      await this.client.leases.delete({ id: this.bootLease }).catch(() => undefined);
    } catch (err) {
      this.logger.warn({ err }, 'failed to clean up the snapshotter in containerd at close');
    }
    this.actives.clear();
  }
}

export function createContainerdSnapshotter(opts: ContainerdSnapshotterOptions): ContainerdSnapshotter {
  return new ContainerdSnapshotter(opts);
}
