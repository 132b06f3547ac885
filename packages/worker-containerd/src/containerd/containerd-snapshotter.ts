import { createHash, randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { containerdSnapshots } from '@kiln/api';
import { KilnError, NotFoundError, silentLogger, type Logger } from '@kiln/common';
import type { ActiveSnapshot, SnapshotInfo, Snapshotter, SnapshotUsage, SnapshotView } from '@kiln/snapshotter';
import { hasCode, type ContainerdClient } from './client.js';
import { OWNER_LABEL } from './containerd-executor.js';
import { mountPointsUnder, mountSnapshot, ownDir, taskRootfsMounts, treeUsage, unmountSnapshot, type SnapshotMount } from './snapshot-mounts.js';

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

interface Active {
  path: string;
  mounted: boolean;
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
  /** Host paths of this start's views -> their mounts (a one-layer view is its parent's dir, which two views share: counted). */
  private readonly views = new Map<string, { mounts: SnapshotMount[]; n: number }>();
  private opened: Promise<void> | undefined;
  private closed = false;

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
    for (const s of infos.filter((i) => i.labels[REMOVED_LABEL])) await this.collect(s.name);
    if (removed + leases.length > 0) this.logger.info({ snapshots: removed, leases: leases.length }, 'removed snapshots and leases an earlier worker left in containerd');
  }

  private async listOwn(): Promise<containerdSnapshots.Info[]> {
    const out: containerdSnapshots.Info[] = [];
    for await (const batch of this.client.snapshots.list({ snapshotter: this.snapshotter, filters: [this.ownerFilter] })) out.push(...batch.info);
    return out.filter((i) => i.name.startsWith(this.prefix));
  }

  async prepare(key: string, parent?: string, opts: { signal?: AbortSignal } = {}): Promise<ActiveSnapshot> {
    await this.ready();
    opts.signal?.throwIfAborted();
    if (this.actives.has(key)) throw new KilnError('already_exists', `snapshot ${key} already exists`);
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
    try {
      const at = await mountSnapshot(mounts, this.mountPoint(`a-${key}`));
      this.actives.set(key, { ...at, mounts, own: ownDir(mounts), parent });
      return { key, path: at.path };
    } catch (err) {
      await this.client.snapshots.remove({ snapshotter: this.snapshotter, key: name }).catch(() => undefined);
      throw err;
    }
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

  async view(id: string): Promise<SnapshotView> {
    await this.ready();
    const { name, mounts } = await this.openView(id);
    const at = await mountSnapshot(mounts, this.mountPoint(name)).catch(async (err: unknown) => {
      await this.removeView(name, id);
      throw err;
    });
    let released: Promise<void> | undefined;
    const entry = this.views.get(at.path) ?? { mounts, n: 0 };
    entry.n++;
    this.views.set(at.path, entry);
    return {
      id,
      path: at.path,
      release: () => {
        released ??= (async () => {
          if (--entry.n === 0) this.views.delete(at.path);
          if (at.mounted) await unmountSnapshot(at.path);
          await this.removeView(name, id);
        })();
        return released;
      },
    };
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
        detachHost: async () => {
          if (!active.mounted) return;
          await unmountSnapshot(active.path);
          active.mounted = false;
        },
      };
    }
    const view = this.views.get(hostPath);
    if (view) return { mounts: taskRootfsMounts(view.mounts), stubRoot: hostPath, detachHost: async () => undefined };
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

  private async removeView(name: string, id: string): Promise<void> {
    await this.client.snapshots.remove({ snapshotter: this.snapshotter, key: name }).catch((err: unknown) => {
      if (!hasCode(err, 'not_found')) this.logger.warn({ err, view: name }, 'failed to remove a view');
    });
    await this.collectIfRemoved(this.committedName(id));
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
    const name = this.committedName(keyOrId);
    const lease = this.committedLease(keyOrId);
    try {
      await this.client.snapshots.update({
        snapshotter: this.snapshotter,
        info: { name, labels: { [REMOVED_LABEL]: 'true' } },
        updateMask: { paths: [`labels.${REMOVED_LABEL}`, `labels.${SNAPSHOT_LABEL}`] },
      });
    } catch (err) {
      if (!hasCode(err, 'not_found')) throw err;
    }
    // Its children or views, if any, hold it now; without any it goes at once.
    await this.client.leases.delete({ id: lease }).catch((err: unknown) => {
      if (!hasCode(err, 'not_found')) throw err;
    });
    await this.collect(name);
  }

  /** Removes `name` if Kiln removed it; the parent after it when that was removed too. */
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
    if (info.info?.labels[REMOVED_LABEL]) await this.collect(name);
  }

  /**
   * Removes the snapshot `name` unless something still builds on it, then
   * its parent if Kiln removed that too; then runs containerd's GC, which
   * deletes the removed snapshots' directories before this returns.
   */
  private async collect(name: string): Promise<void> {
    let removed = 0;
    for (let next: string | undefined = name; next; ) {
      let info: containerdSnapshots.StatSnapshotResponse | undefined;
      try {
        info = await this.client.snapshots.stat({ snapshotter: this.snapshotter, key: next });
      } catch (err) {
        if (hasCode(err, 'not_found')) removed++; // swept by containerd's own GC (see below)
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
    const { name, mounts } = await this.openView(keyOrId);
    try {
      const own = ownDir(mounts);
      if (!own) throw new KilnError('internal', `containerd returned no mounts for snapshot ${keyOrId}`);
      return await treeUsage(own);
    } finally {
      await this.client.snapshots.remove({ snapshotter: this.snapshotter, key: name }).catch(() => undefined);
    }
  }

  /** The snapshot's own directory in overlay upper format (whiteouts as 0/0 devices): what it changed over its parent. */
  async changes(id: string): Promise<SnapshotView | undefined> {
    await this.ready();
    const { name, mounts } = await this.openView(id);
    const own = ownDir(mounts);
    let released: Promise<void> | undefined;
    const release = () => (released ??= this.removeView(name, id));
    if (!own) {
      await release();
      return undefined;
    }
    return { id, path: own, release };
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
