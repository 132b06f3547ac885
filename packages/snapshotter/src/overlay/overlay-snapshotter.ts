import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, constants as fsConstants, existsSync, openSync, readFileSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, rename, rm, rmdir } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import {
  CanceledError,
  InvalidArgumentError,
  KilnError,
  NotFoundError,
  silentLogger,
  syncFileSystem,
  throwIfAborted,
  UnavailableError,
  type Logger,
} from '@kiln/common';
import type { ActiveSnapshot, SnapshotChanges, SnapshotInfo, Snapshotter, SnapshotUsage, SnapshotView } from '../snapshotter.js';
import { SnapshotMetadata, type SnapshotRow } from './metadata.js';
import { mountOverlay, mountsUnder, overlayOptions, unmount } from './mounts.js';

const execFileAsync = promisify(execFile);

/** One page (the kernel's limit for mount data) less a margin. */
export const DEFAULT_MAX_MOUNT_OPTION_BYTES = 4000;

export interface OverlaySnapshotterOptions {
  /** Directory holding the snapshots and their metadata; created if absent. Must not contain ',' or ':'. */
  root: string;
  logger?: Logger;
  /**
   * Longest overlay mount option string. A parent chain whose lower dirs
   * would not fit is merged into one directory first. Default
   * DEFAULT_MAX_MOUNT_OPTION_BYTES.
   */
  maxMountOptionBytes?: number;
  /**
   * Mount active snapshots with overlayfs `volatile` (default true): their
   * unmount at commit skips the sync of the whole upper file system (96 ms
   * for a 2,000-file COPY on a loaded disk, ~10 ms without). Durability then
   * comes from a batched syncfs after commits; see "Durability" below.
   */
  volatile?: boolean;
  /** Wait this long after a commit before the batched syncfs, so one sync covers a build's commits. Default 100. */
  syncDelayMs?: number;
  /** The kernel boot this process runs in; default /proc/sys/kernel/random/boot_id. Tests pass another to stand for a reboot. */
  bootId?: string;
}

/**
 * A Snapshotter on overlayfs, laid out under `root` as:
 *
 * - `metadata.db`: the snapshot table (SQLite; see SnapshotMetadata);
 * - `snapshots/<seq>/fs`: a snapshot's upper dir (for a snapshot without
 *   parent, its whole tree), `work/` beside it while active, and `flat/`, a
 *   merged copy of its whole tree, when a child's lower chain got too long;
 * - `mounts/<seq>`, `mounts/v<seq>-<n>`: overlay mounts of active snapshots
 *   and of views; `tmp/`: scratch space of merges.
 *
 * `prepare` without a parent hands out the plain `fs` dir; with one it
 * mounts `fs` as upper over the parent chain's dirs (stopping at the first
 * `flat` dir). `commit` unmounts and drops the work dir. `view` mounts the
 * chain read-only (or returns the one dir of a one-deep chain). A removed
 * committed snapshot stays on disk while children or views need it.
 *
 * Opening the root reaps what a crash left: every mount below it,
 * active snapshots (their content is lost, as on the directory backend),
 * merges in progress and directories without a row. Must run as root.
 * One snapshotter per root (the metadata is locked).
 *
 * Durability: a commit is recorded `pending` with the kernel's boot id; a
 * syncfs of the snapshots' file system, batched `syncDelayMs` after commits
 * and run one at a time (so in commit order) off the commit's path, marks
 * every snapshot committed before it started `done` (a write-back error it
 * reports: `failed`). At open, pending snapshots of this boot are intact in
 * the page cache (only the process died) and are synced before anything is
 * served; pending ones of an earlier boot (the machine crashed before their
 * sync) and failed ones are dropped with every snapshot above them, so no
 * ref or cache record reaches a torn tree. A volatile mount's work dir holds
 * `work/incompat/volatile`, with which the kernel refuses to mount that
 * upper dir again; an upper dir is only ever mounted once (while active) and
 * work dirs are removed at commit and at open, so none is reused.
 */
export function createOverlaySnapshotter(options: OverlaySnapshotterOptions): Snapshotter {
  if (!options.root) throw new InvalidArgumentError('root must be set', 'root');
  const root = path.resolve(options.root);
  if (/[,:]/.test(root)) throw new InvalidArgumentError(`snapshotter root ${root} must not contain ',' or ':' (overlay mount options)`, 'root');
  const max = options.maxMountOptionBytes ?? DEFAULT_MAX_MOUNT_OPTION_BYTES;
  if (!Number.isInteger(max) || max < 256) throw new InvalidArgumentError('maxMountOptionBytes must be an integer >= 256', 'maxMountOptionBytes');
  const syncDelayMs = options.syncDelayMs ?? 100;
  if (!Number.isInteger(syncDelayMs) || syncDelayMs < 0) throw new InvalidArgumentError('syncDelayMs must be an integer >= 0', 'syncDelayMs');
  return new OverlaySnapshotterImpl(root, options.logger ?? silentLogger(), max, {
    volatile: options.volatile ?? true,
    syncDelayMs,
    bootId: options.bootId ?? currentBootId(),
  });
}

/** This kernel boot's id; unreadable, a random one (every pending snapshot of an earlier process then counts as torn). */
function currentBootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || newId();
  } catch {
    return newId();
  }
}

interface DurabilityOptions {
  volatile: boolean;
  syncDelayMs: number;
  bootId: string;
}

interface ActiveState {
  /** Resolves once prepare finished (either way). */
  ready: Promise<void>;
  /** The overlay mount, when the snapshot has a parent. */
  mount?: string;
}

interface ViewMount {
  count: number;
  /** Resolves to the path readers use. */
  path: Promise<string>;
  /** Set when `path` is an overlay mount this entry made. */
  mount?: string;
}

class OverlaySnapshotterImpl implements Snapshotter {
  private readonly snapshotsDir: string;
  private readonly mountsDir: string;
  private readonly tmpDir: string;
  private readonly opened: Promise<SnapshotMetadata>;
  private readonly activeState = new Map<number, ActiveState>();
  private readonly views = new Map<number, ViewMount>();
  /** Snapshots read by a view, `changes` or a merge: deletion waits for them. */
  private readonly pins = new Map<number, number>();
  private readonly merging = new Map<number, Promise<void>>();
  private viewCounter = 0;
  private closing: Promise<void> | undefined;
  /** Committed, not yet covered by a syncfs that started after their commit. */
  private unsynced: SnapshotRow[] = [];
  private syncTimer: NodeJS.Timeout | undefined;
  private syncing: Promise<void> = Promise.resolve();
  /** The snapshots dir, open for syncfs for the snapshotter's life (so no write-back error between two syncs goes unseen). */
  private dirFd = -1;
  private volatile: boolean;

  constructor(
    private readonly root: string,
    private readonly logger: Logger,
    private readonly maxOptionBytes: number,
    private readonly durability: DurabilityOptions,
  ) {
    this.volatile = durability.volatile;
    this.snapshotsDir = path.join(root, 'snapshots');
    this.mountsDir = path.join(root, 'mounts');
    this.tmpDir = path.join(root, 'tmp');
    this.opened = this.open();
    this.opened.catch(() => undefined);
  }

  private async open(): Promise<SnapshotMetadata> {
    for (const d of [this.snapshotsDir, this.mountsDir, this.tmpDir]) await mkdir(d, { recursive: true });
    // The lock first: a second snapshotter on this root must not touch the first one's mounts.
    const meta = SnapshotMetadata.open(path.join(this.root, 'metadata.db'));
    try {
      this.dirFd = openSync(this.snapshotsDir, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
      // Mounts before directories: what is below a mount cannot be removed.
      for (const m of mountsUnder(this.root)) {
        this.logger.warn({ mount: m }, 'unmounting a leftover snapshot mount');
        await unmount(m, (reason) => this.logger.warn({ mount: m, reason }, 'leftover mount busy: detached lazily'));
      }
      await this.reap(meta);
      await this.settleUnsynced(meta);
    } catch (err) {
      meta.close();
      this.closeDirFd();
      throw err;
    }
    return meta;
  }

  /**
   * Snapshots an earlier process committed but whose sync it never saw end:
   * of this boot, synced now; of an earlier boot, or whose sync failed,
   * dropped with everything above them (see "Durability").
   */
  private async settleUnsynced(meta: SnapshotMetadata): Promise<void> {
    const torn = new Set<number>();
    const toSync: SnapshotRow[] = [];
    // Oldest first: a parent is decided before its children.
    for (const row of meta.all()) {
      const parentTorn = row.parentSeq !== null && torn.has(row.parentSeq);
      if (parentTorn || row.sync === 'failed' || (row.sync === 'pending' && row.bootId !== this.durability.bootId)) torn.add(row.seq);
      else if (row.sync === 'pending') toSync.push(row);
    }
    if (toSync.length > 0) {
      try {
        await syncFileSystem(this.dirFd, this.snapshotsDir);
        meta.markSync(toSync, 'done');
      } catch (err) {
        this.logger.error({ err }, 'syncfs of unsynced snapshots failed at open: dropping them');
        for (const r of toSync) torn.add(r.seq);
        for (const r of meta.all()) if (r.parentSeq !== null && torn.has(r.parentSeq)) torn.add(r.seq);
      }
    }
    if (torn.size === 0) {
      if (toSync.length > 0) this.logger.info({ synced: toSync.length }, 'synced snapshots an earlier process committed');
      return;
    }
    // Newest first: children go before their parents.
    for (const row of meta.all().reverse()) {
      if (!torn.has(row.seq)) continue;
      meta.delete(row);
      await rm(this.snapshotDir(row), { recursive: true, force: true });
    }
    this.logger.warn({ dropped: torn.size }, 'dropped snapshots whose files may not have reached the disk before a crash');
  }

  /** Queues `row` for the next batched syncfs. */
  private scheduleSync(row: SnapshotRow): void {
    this.unsynced.push(row);
    if (this.syncTimer || this.closing) return;
    this.syncTimer = setTimeout(() => {
      this.syncTimer = undefined;
      void this.flushSync();
    }, this.durability.syncDelayMs);
  }

  /** Runs a syncfs for everything committed so far, after any sync already running (so in commit order). */
  private flushSync(): Promise<void> {
    const next = this.syncing.then(() => this.syncBatch());
    this.syncing = next;
    return next;
  }

  private async syncBatch(): Promise<void> {
    const batch = this.unsynced;
    if (batch.length === 0) return;
    this.unsynced = [];
    const meta = await this.opened;
    const started = performance.now();
    try {
      await syncFileSystem(this.dirFd, this.snapshotsDir);
      meta.markSync(batch, 'done');
      this.logger.debug({ snapshots: batch.length, ms: Math.round(performance.now() - started) }, 'synced committed snapshots');
    } catch (err) {
      // Their pages may be gone: the next open drops them (and what was built on them).
      meta.markSync(batch, 'failed');
      this.logger.error({ err, snapshots: batch.map((r) => r.id) }, 'syncfs of committed snapshots failed');
    }
  }

  private closeDirFd(): void {
    if (this.dirFd < 0) return;
    closeSync(this.dirFd);
    this.dirFd = -1;
  }

  /** Drops what a previous process left unfinished. */
  private async reap(meta: SnapshotMetadata): Promise<void> {
    const reaped = { active: 0, removed: 0, dirs: 0 };
    // Newest first, so children go before their parents.
    for (const row of meta.all().reverse()) {
      if (row.kind === 'active') {
        meta.delete(row);
        await rm(this.snapshotDir(row), { recursive: true, force: true });
        reaped.active++;
      } else if (row.removed && meta.childCount(row.seq) === 0) {
        meta.delete(row);
        await rm(this.snapshotDir(row), { recursive: true, force: true });
        reaped.removed++;
      }
    }
    for (const d of [this.mountsDir, this.tmpDir]) {
      for (const name of await readdir(d)) {
        await rm(path.join(d, name), { recursive: true, force: true });
        reaped.dirs++;
      }
    }
    const live = new Map(meta.all().map((r) => [String(r.seq), r]));
    for (const name of await readdir(this.snapshotsDir)) {
      const row = live.get(name);
      if (!row) {
        await rm(path.join(this.snapshotsDir, name), { recursive: true, force: true });
        reaped.dirs++;
        continue;
      }
      // A crash between a commit's metadata write and its cleanup, or mid-merge.
      await rm(path.join(this.snapshotsDir, name, 'work'), { recursive: true, force: true });
      if (!row.flat) await rm(this.flatDir(row), { recursive: true, force: true });
    }
    if (reaped.active + reaped.removed + reaped.dirs > 0) this.logger.info(reaped, 'reaped stale snapshot state');
  }

  private async meta(): Promise<SnapshotMetadata> {
    if (this.closing) throw new UnavailableError(`snapshotter ${this.root} is closed`);
    return this.opened;
  }

  async prepare(key: string, parent?: string, opts: { signal?: AbortSignal } = {}): Promise<ActiveSnapshot> {
    const meta = await this.meta();
    if (!key) throw new InvalidArgumentError('snapshot key must not be empty', 'key');
    if (meta.active(key)) throw new KilnError('already_exists', `snapshot key ${key} is already active`);
    const parentRow = parent === undefined ? undefined : meta.committed(parent);
    if (parent !== undefined && !parentRow) throw new NotFoundError(`no committed snapshot ${parent}`);
    throwIfAborted(opts.signal);

    const row = meta.insertActive(newId(), key, parentRow?.seq ?? null, Date.now());
    let done!: () => void;
    const state: ActiveState = { ready: new Promise((r) => (done = r)) };
    this.activeState.set(row.seq, state);
    try {
      await mkdir(this.snapshotDir(row));
      if (!parentRow) {
        await mkdir(this.fsDir(row), { mode: 0o755 });
        return { key, path: this.fsDir(row) };
      }
      const upper = { upper: this.fsDir(row), work: path.join(this.snapshotDir(row), 'work') };
      const mount = path.join(this.mountsDir, String(row.seq));
      // Set first: a failure below removes the mount dir with the rest (dropActive).
      state.mount = mount;
      // The directories in one round, beside the lower chain's lookup (every step waits for this).
      const [lowers] = await allSettledOrThrow([
        this.mountableLowers(parentRow, upper, opts.signal),
        mkdir(upper.upper, { mode: 0o755 }),
        mkdir(upper.work),
        mkdir(mount),
      ] as const);
      throwIfAborted(opts.signal);
      await this.mountUpper(mount, lowers, upper);
      return { key, path: mount };
    } catch (err) {
      await this.dropActive(meta, row, state).catch((e) => this.logger.warn({ err: e, key }, 'failed to clean up a failed prepare'));
      if (opts.signal?.aborted) throw new CanceledError('snapshot prepare canceled', { cause: err });
      if (err instanceof KilnError) throw err;
      throw new KilnError('internal', `failed to prepare snapshot ${key}: ${(err as Error).message}`, {}, { cause: err });
    } finally {
      done();
    }
  }

  /** A writable overlay, volatile unless turned off or the kernel refuses it (older than 5.10): then without, from then on. */
  private async mountUpper(mount: string, lowers: string[], upper: { upper: string; work: string }): Promise<void> {
    if (!this.volatile) return mountOverlay(mount, overlayOptions(lowers, upper));
    try {
      await mountOverlay(mount, overlayOptions(lowers, upper, { volatile: true }));
    } catch (err) {
      await mountOverlay(mount, overlayOptions(lowers, upper));
      this.volatile = false;
      this.logger.warn({ err }, 'overlay refused the volatile option: snapshot mounts sync at unmount');
    }
  }

  async commit(key: string, opts: { label?: string } = {}): Promise<string> {
    const meta = await this.meta();
    const row = meta.active(key);
    if (!row) throw new NotFoundError(`no active snapshot ${key}`);
    const state = this.activeState.get(row.seq);
    await state?.ready;
    if (meta.active(key) !== row) throw new NotFoundError(`no active snapshot ${key}`);
    if (opts.label !== undefined && meta.byLabel(opts.label)) {
      throw new KilnError('already_exists', `a committed snapshot is already labeled ${opts.label}`);
    }
    const mount = state?.mount;
    if (mount) {
      await unmount(mount, (reason) => this.logger.warn({ key, reason }, 'snapshot mount busy at commit: detached lazily'));
      state.mount = undefined;
    }
    meta.markCommitted(row, opts.label ?? null, this.durability.bootId);
    this.scheduleSync(row);
    this.activeState.delete(row.seq);
    // Both left by a crash here are removed when the root is opened again (see reap).
    await Promise.all([mount ? removeEmptyDir(mount) : undefined, removeWorkDir(path.join(this.snapshotDir(row), 'work'))]);
    return row.id;
  }

  async byLabel(label: string): Promise<string | undefined> {
    const meta = await this.meta();
    return meta.byLabel(label)?.id;
  }

  async view(id: string): Promise<SnapshotView> {
    const meta = await this.meta();
    const row = meta.committed(id);
    if (!row) throw new NotFoundError(`no committed snapshot ${id}`);
    this.pin(row.seq);
    let entry = this.views.get(row.seq);
    if (!entry) {
      const made: ViewMount = { count: 0, path: Promise.resolve('') };
      made.path = this.openView(meta, row, made);
      entry = made;
      this.views.set(row.seq, entry);
      entry.path.catch(() => {
        if (this.views.get(row.seq) === made) this.views.delete(row.seq);
      });
    }
    entry.count++;
    let p: string;
    try {
      p = await entry.path;
    } catch (err) {
      entry.count--;
      await this.unpin(row.seq);
      throw err;
    }
    let released = false;
    const viewEntry = entry;
    return {
      id,
      path: p,
      release: async () => {
        if (released) return;
        released = true;
        await this.closeView(row.seq, viewEntry);
      },
    };
  }

  private async openView(meta: SnapshotMetadata, row: SnapshotRow, entry: ViewMount): Promise<string> {
    const dirs = this.chain(meta, row);
    if (dirs.length === 1) return dirs[0]!;
    if (overlayOptions(dirs).length > this.maxOptionBytes) {
      await this.merge(meta, row);
      return this.flatDir(row);
    }
    const mount = path.join(this.mountsDir, `v${row.seq}-${++this.viewCounter}`);
    await mkdir(mount);
    try {
      await mountOverlay(mount, overlayOptions(dirs));
    } catch (err) {
      await rm(mount, { recursive: true, force: true });
      throw err;
    }
    entry.mount = mount;
    return mount;
  }

  private async closeView(seq: number, entry: ViewMount): Promise<void> {
    try {
      if (--entry.count > 0) return;
      if (this.views.get(seq) === entry) this.views.delete(seq);
      if (entry.mount) {
        await unmount(entry.mount, (reason) => this.logger.warn({ mount: entry.mount, reason }, 'view mount busy at release: detached lazily'));
        await rm(entry.mount, { recursive: true, force: true });
      }
    } finally {
      await this.unpin(seq);
    }
  }

  async changes(id: string): Promise<SnapshotChanges | undefined> {
    const meta = await this.meta();
    const row = meta.committed(id);
    if (!row) throw new NotFoundError(`no committed snapshot ${id}`);
    const parent = row.parentSeq === null ? undefined : meta.get(row.parentSeq)?.id;
    this.pin(row.seq);
    let released = false;
    return {
      id,
      path: this.fsDir(row),
      ...(parent !== undefined ? { parent } : {}),
      release: async () => {
        if (released) return;
        released = true;
        await this.unpin(row.seq);
      },
    };
  }

  async remove(keyOrId: string): Promise<void> {
    const meta = await this.meta();
    const act = meta.active(keyOrId);
    if (act) {
      const state = this.activeState.get(act.seq);
      await state?.ready;
      if (meta.active(keyOrId) !== act) return;
      await this.dropActive(meta, act, state);
      return;
    }
    const row = meta.committed(keyOrId);
    if (!row) return;
    meta.markRemoved(row);
    await this.deleteIfUnused(meta, row);
  }

  async usage(keyOrId: string): Promise<SnapshotUsage> {
    const meta = await this.meta();
    const row = meta.active(keyOrId) ?? meta.committed(keyOrId);
    if (!row) throw new NotFoundError(`no snapshot ${keyOrId}`);
    await this.activeState.get(row.seq)?.ready;
    this.pin(row.seq);
    try {
      return await treeUsage(this.fsDir(row));
    } finally {
      await this.unpin(row.seq);
    }
  }

  async list(): Promise<SnapshotInfo[]> {
    const meta = await this.meta();
    const out: SnapshotInfo[] = [];
    for (const r of meta.all()) {
      if (r.removed) continue;
      const parent = r.parentSeq === null ? undefined : meta.get(r.parentSeq)?.id;
      out.push({
        kind: r.kind,
        name: r.kind === 'active' ? r.key! : r.id,
        ...(parent !== undefined ? { parent } : {}),
        ...(r.label !== null ? { label: r.label } : {}),
        createdAtMs: r.createdAtMs,
      });
    }
    return out;
  }

  async sync(): Promise<void> {
    await this.meta();
    clearTimeout(this.syncTimer);
    this.syncTimer = undefined;
    await this.flushSync();
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    let meta: SnapshotMetadata;
    try {
      meta = await this.opened;
    } catch {
      return;
    }
    try {
      await Promise.allSettled([...this.merging.values()]);
      await Promise.allSettled([...this.activeState.values()].map((s) => s.ready));
      // Active snapshots cannot be committed after close: drop them now, as the next open would.
      for (const row of meta.all()) {
        if (row.kind === 'active') await this.dropActive(meta, row, this.activeState.get(row.seq)).catch(() => undefined);
      }
      for (const m of mountsUnder(this.root)) await unmount(m).catch((err) => this.logger.warn({ err, mount: m }, 'failed to unmount at close'));
      for (const name of await readdir(this.mountsDir).catch(() => [])) await rm(path.join(this.mountsDir, name), { recursive: true, force: true });
      // A clean stop leaves every committed snapshot synced.
      clearTimeout(this.syncTimer);
      this.syncTimer = undefined;
      await this.flushSync();
    } catch (err) {
      this.logger.warn({ err }, 'snapshotter close did not finish cleanly');
    } finally {
      this.views.clear();
      meta.close();
      this.closeDirFd();
    }
  }

  /** Unmounts and deletes an active snapshot, then its parent if that was removed and unused. */
  private async dropActive(meta: SnapshotMetadata, row: SnapshotRow, state: ActiveState | undefined): Promise<void> {
    if (state?.mount) {
      await unmount(state.mount, (reason) => this.logger.warn({ key: row.key, reason }, 'snapshot mount busy at remove: detached lazily'));
      await rm(state.mount, { recursive: true, force: true });
      state.mount = undefined;
    }
    this.activeState.delete(row.seq);
    meta.delete(row);
    await rm(this.snapshotDir(row), { recursive: true, force: true });
    await this.deleteParentIfUnused(meta, row);
  }

  private async deleteIfUnused(meta: SnapshotMetadata, row: SnapshotRow): Promise<void> {
    if (!row.removed || (this.pins.get(row.seq) ?? 0) > 0 || meta.childCount(row.seq) > 0) return;
    if (meta.get(row.seq) !== row) return;
    // Metadata first: a crash after it leaves a directory without a row, which open() removes.
    meta.delete(row);
    await rm(this.snapshotDir(row), { recursive: true, force: true });
    await this.deleteParentIfUnused(meta, row);
  }

  private async deleteParentIfUnused(meta: SnapshotMetadata, child: SnapshotRow): Promise<void> {
    const parent = child.parentSeq === null ? undefined : meta.get(child.parentSeq);
    if (parent) await this.deleteIfUnused(meta, parent);
  }

  /** The dirs of `row`'s tree, top first, ending at the first merged copy. */
  private chain(meta: SnapshotMetadata, row: SnapshotRow): string[] {
    const dirs: string[] = [];
    for (let r: SnapshotRow | undefined = row; r; r = r.parentSeq === null ? undefined : meta.get(r.parentSeq)) {
      if (r.flat) {
        dirs.push(this.flatDir(r));
        break;
      }
      dirs.push(this.fsDir(r));
    }
    return dirs;
  }

  /** Lower dirs for a child of `parent` that fit one mount with `upper`, merging the parent's chain if needed. */
  private async mountableLowers(parent: SnapshotRow, upper: { upper: string; work: string }, signal?: AbortSignal): Promise<string[]> {
    const meta = await this.opened;
    const dirs = this.chain(meta, parent);
    if (overlayOptions(dirs, upper, { volatile: this.volatile }).length <= this.maxOptionBytes) return dirs;
    await this.merge(meta, parent, signal);
    return [this.flatDir(parent)];
  }

  /**
   * Writes `row`'s whole tree into its `flat/` dir, so chains through it
   * stop there. Chains longer than one mount are merged bottom-up in
   * groups, each group mounted read-only over the previous merge and copied
   * out (the kernel applies the whiteouts). One merge per snapshot at a time.
   */
  private merge(meta: SnapshotMetadata, row: SnapshotRow, signal?: AbortSignal): Promise<void> {
    if (row.flat) return Promise.resolve();
    const running = this.merging.get(row.seq);
    if (running) return running;
    const run = (async () => {
      const dirs = this.chain(meta, row);
      const pinned = this.pinChain(meta, row);
      const scratch = await mkdtemp(path.join(this.tmpDir, `merge-${row.seq}-`));
      const started = Date.now();
      try {
        let merged: string | undefined;
        let end = dirs.length; // dirs[0, end) are still to merge
        let step = 0;
        while (end > 0) {
          let start = end - 1;
          const group = (s: number) => [...dirs.slice(s, end), ...(merged ? [merged] : [])];
          while (start > 0 && overlayOptions(group(start - 1)).length <= this.maxOptionBytes) start--;
          const next = path.join(scratch, `step${++step}`);
          await mkdir(next);
          await this.copyMerged(group(start), path.join(scratch, 'mnt'), next, signal);
          if (merged) await rm(merged, { recursive: true, force: true });
          merged = next;
          end = start;
        }
        await rename(merged!, this.flatDir(row));
        meta.markFlat(row, true);
        this.logger.info({ snapshot: row.id, depth: dirs.length, steps: step, ms: Date.now() - started }, 'merged a deep snapshot chain');
      } finally {
        await rm(scratch, { recursive: true, force: true });
        for (const seq of pinned) await this.unpin(seq);
      }
    })();
    this.merging.set(row.seq, run);
    void run.finally(() => this.merging.delete(row.seq)).catch(() => undefined);
    return run;
  }

  /** Copies the union of `dirs` (top first) into `dest`: through a read-only overlay at `mnt` when there are several. */
  private async copyMerged(dirs: string[], mnt: string, dest: string, signal?: AbortSignal): Promise<void> {
    if (dirs.length === 1) {
      await copyTree(dirs[0]!, dest, signal);
      return;
    }
    await mkdir(mnt);
    try {
      await mountOverlay(mnt, overlayOptions(dirs));
      try {
        await copyTree(mnt, dest, signal);
      } finally {
        await unmount(mnt);
      }
    } finally {
      await rm(mnt, { recursive: true, force: true });
    }
  }

  private pinChain(meta: SnapshotMetadata, row: SnapshotRow): number[] {
    const seqs: number[] = [];
    for (let r: SnapshotRow | undefined = row; r; r = r.parentSeq === null ? undefined : meta.get(r.parentSeq)) {
      this.pin(r.seq);
      seqs.push(r.seq);
      if (r.flat) break;
    }
    return seqs;
  }

  private pin(seq: number): void {
    this.pins.set(seq, (this.pins.get(seq) ?? 0) + 1);
  }

  private async unpin(seq: number): Promise<void> {
    const n = (this.pins.get(seq) ?? 1) - 1;
    if (n > 0) {
      this.pins.set(seq, n);
      return;
    }
    this.pins.delete(seq);
    if (this.closing) return;
    const meta = await this.opened;
    const row = meta.get(seq);
    if (row) await this.deleteIfUnused(meta, row);
  }

  private snapshotDir(row: SnapshotRow): string {
    return path.join(this.snapshotsDir, String(row.seq));
  }

  private fsDir(row: SnapshotRow): string {
    return path.join(this.snapshotsDir, String(row.seq), 'fs');
  }

  private flatDir(row: SnapshotRow): string {
    return path.join(this.snapshotsDir, String(row.seq), 'flat');
  }
}

/** `cp -a` of `src`'s content (and its own attributes) into the existing dir `dest`. */
async function copyTree(src: string, dest: string, signal?: AbortSignal): Promise<void> {
  try {
    await execFileAsync('cp', ['-a', '--reflink=auto', '--', `${src}/.`, `${dest}/`], { signal, maxBuffer: 1 << 20 });
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr?.trim();
    throw new Error(`failed to copy ${src}: ${stderr || (err as Error).message}`, { cause: err });
  }
}

/** Apparent bytes of regular files (hardlinks once) and inodes below and including `dir`. */
async function treeUsage(dir: string): Promise<SnapshotUsage> {
  const seen = new Set<number>();
  const usage: SnapshotUsage = { sizeBytes: 0, inodes: 1 };
  const walk = async (d: string): Promise<void> => {
    for (const ent of await readdir(d, { withFileTypes: true })) {
      const p = path.join(d, ent.name);
      const st = await lstat(p);
      if (seen.has(st.ino)) continue;
      seen.add(st.ino);
      usage.inodes++;
      if (st.isFile()) usage.sizeBytes += st.size;
      else if (st.isDirectory()) await walk(p);
    }
  };
  if (existsSync(dir)) await walk(dir);
  return usage;
}

function newId(): string {
  return randomBytes(16).toString('hex');
}

/** Awaits every promise (so none is still running when this settles) and throws the first rejection, if any. */
async function allSettledOrThrow<T extends readonly unknown[]>(promises: { [K in keyof T]: Promise<T[K]> }): Promise<T> {
  const settled = await Promise.allSettled(promises);
  const failed = settled.find((r) => r.status === 'rejected');
  if (failed) throw failed.reason;
  return settled.map((r) => (r as PromiseFulfilledResult<unknown>).value) as unknown as T;
}

/** Removes an empty directory (a mount point after its unmount) in one call; recursively when something is left in it. */
async function removeEmptyDir(dir: string): Promise<void> {
  await rmdir(dir).catch(() => rm(dir, { recursive: true, force: true }));
}

/** Removes an overlay work dir: its inner `work` dir and itself, two calls in the usual case. */
async function removeWorkDir(dir: string): Promise<void> {
  await rmdir(path.join(dir, 'work')).catch(() => undefined);
  await removeEmptyDir(dir);
}
