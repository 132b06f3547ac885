/**
 * The Snapshotter seam: filesystem trees that build steps write once and then
 * share read-only, in the containerd model.
 *
 * - An *active* snapshot is created by `prepare(key, parent?)`: a writable
 *   tree seeded with the parent's content, named by a caller-chosen `key`.
 * - `commit(key)` freezes it into a *committed* snapshot with a stable `id`;
 *   the key is then free again.
 * - Committed snapshots are read through `view(id)` and can be the parent of
 *   later `prepare` calls.
 *
 * Backends: `directory` (a plain directory per snapshot, parents copied with
 * reflinks when the filesystem supports them) and `overlayfs` (an upper dir
 * per snapshot mounted over its parent chain's upper dirs, where a committed
 * parent outlives its children). The contract is written so both fit:
 * callers never rely on a snapshot's storage being independent of its
 * parent's, and read a snapshot only through the paths handed out here.
 *
 * Overlay upper dirs (what `changes` returns on the overlayfs backend) are
 * not plain trees: a deleted path is a character device 0/0 of the same
 * name (a whiteout), and a directory that replaced a lower one carries the
 * xattr `trusted.overlay.opaque=y` (lower content hidden). Whoever reads an
 * upper dir must translate those (to OCI `.wh.NAME` / `.wh..wh..opq`).
 */
export interface Snapshotter {
  /**
   * Creates the active snapshot `key`, a writable tree holding a copy of the
   * committed snapshot `parent` (or empty without one), and returns where to
   * write it.
   *
   * Ownership: the caller owns the active snapshot until it calls `commit(key)`
   * or `remove(key)`; nobody else writes it. The returned `path` is valid
   * until then. A later backend may return a mount instead of a path: read
   * `path` only through this object.
   *
   * Errors: `already_exists` when `key` is already active; `not_found` when
   * `parent` is not a committed snapshot. Calls with different keys may run
   * concurrently.
   */
  prepare(key: string, parent?: string, opts?: PrepareOptions): Promise<ActiveSnapshot>;

  /**
   * Freezes the active snapshot `key` and returns the id of the new
   * committed snapshot. The id is stable: it names the same content for the
   * life of the snapshotter's root (across restarts) until `remove(id)`.
   * After commit the caller must not write the former path again; the key
   * can be reused by a new `prepare`.
   *
   * `label`, when given, names the committed snapshot for `byLabel` (e.g.
   * an image layer's chain id), persisted with it; labels are unique.
   *
   * Errors: `not_found` when `key` is not active; `already_exists` when
   * `label` already names a committed snapshot (the active one stays).
   */
  commit(key: string, opts?: { label?: string }): Promise<string>;

  /** The committed snapshot carrying `label`, if any (see `commit`). */
  byLabel(label: string): Promise<string | undefined>;

  /**
   * Opens the committed snapshot `id` for reading. The caller must not write
   * below `path` (the directory backend cannot enforce it; an overlay
   * backend mounts it read-only). Call `release()` when done reading; the
   * path stays valid until then even if `remove(id)` runs concurrently on a
   * backend that needs it (the directory backend's release is a no-op).
   * Any number of views of one id may be open at once.
   *
   * Errors: `not_found` when `id` is not committed.
   */
  view(id: string): Promise<SnapshotView>;

  /**
   * Drops an active snapshot (by key, discarding its content) or a committed
   * one (by id). Removing a committed snapshot that is the parent of others
   * is allowed: a backend that shares storage with children keeps what they
   * need until they are gone. Removing an absent name is a no-op, so cleanup
   * paths can call it unconditionally.
   */
  remove(keyOrId: string): Promise<void>;

  /**
   * Disk usage of the committed snapshot `id` or active snapshot `key`:
   * apparent bytes of regular files (hardlinked files counted once) and the
   * number of inodes. Walks the tree; meant for `kiln du`, not hot paths.
   * A backend sharing storage with parents (overlayfs) counts only what the
   * snapshot itself stores (its upper dir).
   *
   * Errors: `not_found` when nothing has that name.
   */
  usage(keyOrId: string): Promise<SnapshotUsage>;

  /**
   * Optional: the directory holding only what committed snapshot `id`
   * changed over its parent, in overlay upper format (see the top of this
   * file for whiteouts and opaque dirs), for diffing without a tree walk of
   * both sides. Undefined when the backend keeps no such dir for `id` (the
   * directory backend never does); then diff `view(id)` against the parent.
   * Release it like a view.
   *
   * Errors: `not_found` when `id` is not committed.
   */
  changes?(id: string): Promise<SnapshotChanges | undefined>;

  /** Every active and committed snapshot, in creation order. */
  list(): Promise<SnapshotInfo[]>;

  /**
   * Resolves once every snapshot committed before the call is on disk (a
   * backend that syncs in the background after commit); absent when commits
   * are as durable as they will get.
   */
  sync?(): Promise<void>;

  /**
   * Releases resources held by the snapshotter (not the snapshots, which
   * persist under the root). Idempotent; never rejects.
   */
  close(): Promise<void>;
}

export interface PrepareOptions {
  signal?: AbortSignal;
  /**
   * The caller hands the tree to a runtime that mounts it itself (a
   * containerd task's rootfs) and reads it only through `unmounted` until
   * it calls `unmounted.mount()`. A backend that can may then leave `path`
   * unmounted; others ignore it.
   */
  deferMount?: boolean;
}

export interface ActiveSnapshot {
  readonly key: string;
  /** Absolute host path of the writable tree (with `unmounted`: once mounted). */
  readonly path: string;
  /** Set when `deferMount` left the tree unmounted: read it through this, or mount it first. */
  readonly unmounted?: UnmountedTree;
}

/**
 * Reads of a tree not mounted on the host (from its layers), with symlinks
 * followed inside the root as `readFileInRoot` and `resolveInRoot` do.
 */
export interface UnmountedTree {
  /** The bytes of regular file `p`; errors as `readFileInRoot` (ENOENT, ENOTDIR, EISDIR, EINVAL). */
  readFile(p: string): Promise<Buffer>;
  /** Where `p` leads (absolute inside the root, symlinks resolved, the final one too) and what is there. */
  lookup(p: string): Promise<{ path: string; exists: boolean; isDirectory: boolean }>;
  /** Mounts the tree at the snapshot's `path`, for writes on the host (a no-op once mounted). */
  mount(): Promise<void>;
}

export interface SnapshotView {
  readonly id: string;
  /** Absolute host path of the tree; read it, never write it. */
  readonly path: string;
  /** Ends this view. Idempotent. */
  release(): Promise<void>;
}

/** What `Snapshotter.changes` returns: a view of one snapshot's own changes. */
export interface SnapshotChanges extends SnapshotView {
  /**
   * Set when the backend vouches that these are the changes over exactly
   * this committed snapshot, as an overlay mount with index, redirect_dir
   * and metacopy off shows them (names the dir does not hold are the
   * parent's, unchanged): a differ may then compare only those names
   * (`TreeDiffOptions.changesDir`). Unset: read it as a plain upper dir.
   */
  readonly parent?: string;
}

export interface SnapshotUsage {
  sizeBytes: number;
  inodes: number;
}

export interface SnapshotInfo {
  kind: 'active' | 'committed';
  /** The key of an active snapshot, or the id of a committed one. */
  name: string;
  /** The committed snapshot this one was prepared from. */
  parent?: string;
  /** The label given at commit. */
  label?: string;
  createdAtMs: number;
}
