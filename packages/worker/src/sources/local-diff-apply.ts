import { createHash } from 'node:crypto';
import { closeSync, constants, copyFileSync, fchmodSync, fchownSync, fstatSync, futimesSync, lutimesSync, mkdirSync, openSync, rmSync, symlinkSync, writeSync } from 'node:fs';
import path from 'node:path';
import type { ContextChange, ContextEntry } from '@kiln/common';
import { applyAttrs, lstatOrUndefined, resolveInRoot } from '@kiln/snapshotter';
import { sharedFileCopyPool, type FileCopyPool, type FileWriteJob } from '../fs/copy-pool.js';
import { childPath, EventLoopYielder } from '../fs/fs-util.js';
import { OpFailure } from '../ops/op-failure.js';

/** A context entry as the worker holds it: files carry the sha256 (hex) of what it wrote. */
export interface ManifestEntry extends ContextEntry {
  sha256?: string;
}

export type ContextManifest = Map<string, ManifestEntry>;

export interface ApplyContextDiffOptions {
  /** The active snapshot being written. */
  root: string;
  /** The manifest of the copy the diff is against (empty: everything is sent). */
  base: ReadonlyMap<string, ManifestEntry>;
  /**
   * Where unchanged entries come from: `seeded` when `root` was prepared on
   * the base copy's snapshot (already holds them), else `baseRoot` (a view
   * of it) they are copied from. Neither with an empty base.
   */
  seeded: boolean;
  baseRoot?: string;
  changes: AsyncIterable<ContextChange>;
  signal?: AbortSignal;
  /** Threads that create the small files past the first POOL_BATCH (default: the process's pool; null: all on this thread). */
  pool?: FileCopyPool | null;
}

export interface ApplyContextDiffResult {
  manifest: ContextManifest;
  /** Entries written from the stream / deleted. */
  changed: number;
  deleted: number;
  /** File bytes received. */
  contentBytes: number;
}

/**
 * Applies a context diff (see @kiln/common context-diff.ts) onto `root`
 * and returns the new manifest. Every path is resolved inside `root`
 * (and `baseRoot`); an entry must sit below a directory the manifest
 * holds, so a symlink can never become a parent. Files are hashed as they
 * are written; unchanged files keep the digest the base recorded.
 * Directory mtimes are set last, as the client had them.
 */
export async function applyContextDiff(o: ApplyContextDiffOptions): Promise<ApplyContextDiffResult> {
  const manifest: ContextManifest = new Map(o.base);
  const written = new Set<string>();
  /** Directories whose mtime must be set at the end. */
  const dirty = new Set<string>();
  const dirs = new VerifiedDirs(o.root);
  const yielder = new EventLoopYielder();
  let changed = 0;
  let deleted = 0;
  let contentBytes = 0;
  const writes = new PooledWrites(o.pool === undefined ? sharedFileCopyPool() : (o.pool ?? undefined));

  try {
    for await (const change of o.changes) {
      o.signal?.throwIfAborted();
      const pause = yielder.tick();
      if (pause) await pause;
      if (change.kind === 'delete') {
        // A pooled file may be at or below the path: in place before anything is removed.
        await writes.flush();
        deleted++;
        if (manifest.get(change.path)?.type === 'dir') dropSubtree(manifest, change.path);
        manifest.delete(change.path);
        dirs.forget(change.path);
        written.delete(change.path);
        markParent(dirty, change.path);
        if (o.seeded) await removeInRoot(o.root, change.path);
        continue;
      }
      const e = change.entry;
      const parentRel = path.posix.dirname(e.path);
      if (parentRel !== '.' && manifest.get(parentRel)?.type !== 'dir') {
        throw new OpFailure(`failed to receive context: ${e.path} has no parent directory ${parentRel} in the transfer`, { details: { path: e.path } });
      }
      changed++;
      const parent = dirs.mkdir(parentRel);
      const target = childPath(parent.path, path.posix.basename(e.path));
      const entry: ManifestEntry = { ...e };
      // The name was written in this transfer, or a directory (maybe with pooled files below) or a
      // seeded entry whose attributes change is replaced: every pooled file is in place first, and
      // this entry is made here.
      const conflict = written.has(e.path) || (e.type === 'dir' ? manifest.has(e.path) : manifest.get(e.path)?.type === 'dir');
      if (conflict) await writes.flush();
      if (e.type === 'dir') {
        const existing = lstatOrUndefined(target);
        if (existing && !existing.isDirectory()) rmSync(target, { recursive: true, force: true });
        if (!existing || !existing.isDirectory()) mkdirSync(target);
        applyAttrs(target, { mode: e.mode, uid: e.uid, gid: e.gid }, false);
        // Its owner or setgid bit may have changed: files created in it are looked at again.
        dirs.attrsChanged(e.path);
        dirty.add(e.path);
      } else {
        // A directory replaced by a file or link takes its children with it
        // (only a directory has children in the manifest: checked above for each entry).
        if (manifest.get(e.path)?.type === 'dir') dropSubtree(manifest, e.path);
        dirs.forget(e.path);
        if (e.type === 'file') {
          if (change.inline && !conflict && writes.wants()) {
            if (change.inline.length !== e.size) throw shortBody(e, change.inline.length);
            entry.sha256 = digestOf(change.inline);
            // Its own copy of the bytes: `inline` is a view into the stream's chunk, which a post would clone whole.
            await writes.add(parent.path, { target, ...(e.size > 0 ? { data: new Uint8Array(change.inline) } : {}), mode: e.mode, uid: e.uid, gid: e.gid, mtimeMs: e.mtimeMs });
          } else {
            entry.sha256 = change.inline ? receiveInlineFile(parent, target, e, change.inline) : await receiveStreamedFile(parent, target, e, change.body);
          }
          contentBytes += e.size;
        } else {
          // No lstat first: whatever sits at the name (a seeded copy's entry) is removed only when the link cannot be made.
          replaceExisting(target, () => symlinkSync(e.linkname, target));
          applyAttrs(target, { mode: e.mode, uid: e.uid, gid: e.gid, mtimeMs: e.mtimeMs }, true);
        }
      }
      manifest.set(e.path, entry);
      written.add(e.path);
      markParent(dirty, e.path);
    }
    await writes.flush();
  } catch (err) {
    // Nothing may still be writing when the caller removes the snapshot.
    await writes.settle();
    throw err;
  }

  if (!o.seeded && o.baseRoot !== undefined) {
    for (const rel of sortedPaths(manifest.keys())) {
      if (written.has(rel)) continue;
      await yielder.tick();
      await copyFromBase(dirs, o.baseRoot, manifest.get(rel)!);
      if (manifest.get(rel)!.type === 'dir') dirty.add(rel);
      markParent(dirty, rel);
    }
  }

  // Deepest first: setting a directory's mtime never touches its parent's.
  for (const rel of sortedPaths(dirty).reverse()) {
    const m = manifest.get(rel);
    if (m?.type !== 'dir') continue;
    const t = await resolveInRoot(o.root, rel, { followFinalSymlink: false });
    lutimesSync(t, m.mtimeMs / 1000, m.mtimeMs / 1000);
  }
  return { manifest, changed, deleted, contentBytes };
}

/** sha256 of no bytes: an empty file's digest, without a hash object per file. */
const EMPTY_SHA256 = createHash('sha256').digest('hex');

const NEW_FILE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/**
 * Runs `make` (a create that fails with EEXIST when something is at
 * `target`); when the name is taken, removes what is there (a symlink
 * itself, never its target) and makes it again. A fresh tree pays no lstat
 * per entry this way.
 */
function replaceExisting<T>(target: string, make: () => T): T {
  try {
    return make();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  rmSync(target, { recursive: true, force: true });
  return make();
}

/**
 * Writes one file of the diff: created with O_EXCL|O_NOFOLLOW (never
 * through an entry already there), its bytes hashed as written, a short
 * body refused before any attribute is set; then owner, mode and mtime on
 * the open fd, skipping what the creation already gave it. A body already
 * in memory is written without an await.
 */
function receiveInlineFile(parent: DirInfo, target: string, e: ContextEntry, data: Buffer): string {
  const fd = replaceExisting(target, () => openSync(target, NEW_FILE_FLAGS, e.mode & 0o777));
  try {
    if (data.length > 0) writeAll(fd, data);
    finishFile(fd, parent, e, data.length);
  } finally {
    closeSync(fd);
  }
  return digestOf(data);
}

function digestOf(data: Buffer): string {
  return data.length === 0 ? EMPTY_SHA256 : createHash('sha256').update(data).digest('hex');
}

function shortBody(e: ContextEntry, n: number): OpFailure {
  return new OpFailure(`failed to receive context: ${e.path} carried ${n} of ${e.size} bytes`, { details: { path: e.path } });
}

async function receiveStreamedFile(parent: DirInfo, target: string, e: ContextEntry, body: AsyncIterable<Buffer>): Promise<string> {
  const fd = replaceExisting(target, () => openSync(target, NEW_FILE_FLAGS, e.mode & 0o777));
  try {
    const hash = createHash('sha256');
    let n = 0;
    for await (const part of body) {
      hash.update(part);
      writeAll(fd, part);
      n += part.length;
    }
    finishFile(fd, parent, e, n);
    return hash.digest('hex');
  } finally {
    closeSync(fd);
  }
}

function finishFile(fd: number, parent: DirInfo, e: ContextEntry, n: number): void {
  // Checked before the attrs: a short file must fail the transfer, not get them.
  if (n !== e.size) throw shortBody(e, n);
  setNewFileAttrs(fd, parent, e.mode & 0o777, e);
}

function writeAll(fd: number, data: Uint8Array): void {
  let off = 0;
  while (off < data.length) off += writeSync(fd, data, off, data.length - off);
}

/**
 * Owner, mode (chown first: it would clear setuid bits) and mtime of a file
 * just created in `parent` with `createMode`. A file is born with the
 * directory's creation owner and `createMode` less the bits the directory
 * drops (umask, default ACL): both are learnt from fstat of files created
 * there (the owner once, each mode bit once), so fchown and fchmod run only
 * where they change something. The mtime is always set.
 */
function setNewFileAttrs(fd: number, parent: DirInfo, createMode: number, e: ContextEntry): void {
  const c = (parent.creation ??= { uid: -1, gid: -1, kept: 0, dropped: 0 });
  if (c.uid < 0 || (createMode & ~(c.kept | c.dropped)) !== 0) {
    const st = fstatSync(fd);
    c.uid = st.uid;
    c.gid = st.gid;
    c.kept |= createMode & st.mode;
    c.dropped |= createMode & ~st.mode;
  }
  if (e.uid !== c.uid || e.gid !== c.gid) fchownSync(fd, e.uid, e.gid);
  if ((e.mode & 0o7777) !== createMode || (createMode & c.dropped) !== 0) fchmodSync(fd, e.mode & 0o7777);
  const t = e.mtimeMs / 1000;
  futimesSync(fd, t, t);
}

/**
 * The content digest of a manifest: the same value `treeContentDigest`
 * computes by walking a tree holding exactly these entries (path, type,
 * permission bits, owner, link target, file sha256; never mtimes).
 */
export function manifestContentDigest(manifest: ReadonlyMap<string, ManifestEntry>): string {
  const h = createHash('sha256');
  for (const rel of sortedPaths(manifest.keys())) {
    const e = manifest.get(rel)!;
    const type = e.type === 'symlink' ? 'symlink' : e.type;
    const body = e.type === 'file' ? (e.sha256 ?? '') : e.type === 'symlink' ? e.linkname : '';
    h.update(`${JSON.stringify([rel, type, e.mode & 0o7777, e.uid, e.gid, body])}\n`);
  }
  return `sha256:${h.digest('hex')}`;
}

/** Paths in the order of a sorted depth-first walk (each directory's names sorted, children right after their parent). */
export function sortedPaths(paths: Iterable<string>): string[] {
  // With "/" as NUL (never in a path, below every other character) a plain string sort is
  // the walk's order: "a/b" before "a-c", a parent before its children; no split per comparison.
  const keys = Array.from(paths, (p) => p.replaceAll('/', '\0'));
  keys.sort();
  for (let i = 0; i < keys.length; i++) keys[i] = keys[i]!.replaceAll('\0', '/');
  return keys;
}

function markParent(dirty: Set<string>, rel: string): void {
  const parent = path.posix.dirname(rel);
  if (parent !== '.') dirty.add(parent);
}

/**
 * Removes everything below directory `rel` from the manifest (a scan of the
 * whole manifest: only called when a directory is deleted or replaced).
 */
function dropSubtree(manifest: ContextManifest, rel: string): void {
  const prefix = `${rel}/`;
  for (const k of manifest.keys()) if (k.startsWith(prefix)) manifest.delete(k);
}

/** A directory of the tree being written, as VerifiedDirs knows it. */
interface DirInfo {
  /** Its host path. */
  path: string;
  /**
   * What a file created in it is born with (learnt by fstat; see
   * setNewFileAttrs): owner, and the permission bits seen kept or dropped
   * at creation. Undefined until the first file.
   */
  creation?: { uid: number; gid: number; kept: number; dropped: number };
}

/**
 * Directories of `root` this transfer has created or checked (lstat: a real
 * directory, reached through real directories), with their host paths, so
 * the thousands of files of one directory resolve its path once instead of
 * once per file and per component. An entry replaced or deleted is
 * forgotten with everything below it.
 */
class VerifiedDirs {
  readonly #known = new Map<string, DirInfo>();
  readonly #root: DirInfo;
  constructor(readonly root: string) {
    this.#root = { path: root };
  }

  /** Creates (0755, as the manifest fixes them later) and resolves directory `rel` inside the root. */
  mkdir(rel: string): DirInfo {
    if (rel === '.' || rel === '') return this.#root;
    const hit = this.#known.get(rel);
    if (hit !== undefined) return hit;
    const parentRel = path.posix.dirname(rel);
    const parent = this.mkdir(parentRel);
    const resolved = path.join(parent.path, path.posix.basename(rel));
    const st = lstatOrUndefined(resolved);
    if (!st) mkdirSync(resolved, 0o755);
    else if (!st.isDirectory()) throw new OpFailure(`failed to receive context: ${rel} is not a directory`, { details: { path: rel } });
    const info: DirInfo = { path: resolved };
    this.#known.set(rel, info);
    return info;
  }

  /** Directory `rel` got new attributes: what files are born with there is learnt again. */
  attrsChanged(rel: string): void {
    const info = rel === '.' || rel === '' ? this.#root : this.#known.get(rel);
    if (info) info.creation = undefined;
  }

  /** Drops `rel` and what lies below it (called before it is replaced or removed). */
  forget(rel: string): void {
    if (!this.#known.delete(rel)) return;
    const prefix = `${rel}/`;
    for (const k of this.#known.keys()) if (k.startsWith(prefix)) this.#known.delete(k);
  }
}

async function removeInRoot(root: string, rel: string): Promise<void> {
  const parentRel = path.posix.dirname(rel);
  const parent = parentRel === '.' ? root : await resolveInRoot(root, parentRel, { followFinalSymlink: false });
  if (!lstatOrUndefined(parent)?.isDirectory()) return;
  rmSync(path.join(parent, path.posix.basename(rel)), { recursive: true, force: true });
}

async function copyFromBase(dirs: VerifiedDirs, baseRoot: string, e: ManifestEntry): Promise<void> {
  const parent = dirs.mkdir(path.posix.dirname(e.path));
  const target = childPath(parent.path, path.posix.basename(e.path));
  const attrs = { mode: e.mode, uid: e.uid, gid: e.gid };
  if (e.type === 'dir') {
    if (!lstatOrUndefined(target)) mkdirSync(target);
    applyAttrs(target, attrs, false);
    return;
  }
  if (e.type === 'symlink') symlinkSync(e.linkname, target);
  else copyFileSync(await resolveInRoot(baseRoot, e.path, { followFinalSymlink: false }), target, constants.COPYFILE_FICLONE | constants.COPYFILE_EXCL);
  applyAttrs(target, { ...attrs, mtimeMs: e.mtimeMs }, e.type === 'symlink');
}

/** Files of a transfer written on this thread before the pool is used: a small diff starts no thread. */
const POOL_BATCH = 64;
/** Batches in flight at once: bounds the queued bytes, keeps every thread fed. */
const POOL_WINDOW = 8;

/**
 * The small files of a transfer past its first POOL_BATCH, written in
 * batches of POOL_BATCH per directory on the file pool's threads (one
 * directory's batch on one thread: creates in one directory would contend
 * for its lock), while this thread reads the stream, hashes, and makes
 * directories and links. The caller flushes before anything that could
 * remove or replace a path a pooled file lies at or below, and before
 * directory mtimes are set.
 */
class PooledWrites {
  #batch: FileWriteJob[] = [];
  #dir = '';
  #lane = 0;
  #seen = 0;
  readonly #inflight = new Set<Promise<void>>();
  #failure: { err: unknown } | undefined;

  constructor(private readonly pool: FileCopyPool | undefined) {}

  /** True when the next small file goes to the pool (else the caller writes it now). */
  wants(): boolean {
    return this.pool !== undefined && this.#seen++ >= POOL_BATCH;
  }

  async add(dir: string, job: FileWriteJob): Promise<void> {
    this.#throwIfFailed();
    if (dir !== this.#dir) {
      this.#dispatch();
      this.#dir = dir;
      this.#lane++;
    }
    this.#batch.push(job);
    if (this.#batch.length < POOL_BATCH) return;
    this.#dispatch();
    while (this.#inflight.size >= POOL_WINDOW) await Promise.race(this.#inflight);
    this.#throwIfFailed();
  }

  /** Waits until every queued file is written; throws the first failure. */
  async flush(): Promise<void> {
    this.#dispatch();
    while (this.#inflight.size > 0) await Promise.race(this.#inflight);
    this.#throwIfFailed();
  }

  #throwIfFailed(): void {
    if (this.#failure) throw this.#failure.err;
  }

  /** Drops what is not sent yet and waits for the threads, ignoring failures (after a failed transfer). */
  async settle(): Promise<void> {
    this.#batch = [];
    while (this.#inflight.size > 0) await Promise.race(this.#inflight);
  }

  #dispatch(): void {
    if (this.#batch.length === 0 || !this.pool) return;
    const jobs = this.#batch;
    this.#batch = [];
    const p: Promise<void> = this.pool.run(jobs, this.#lane).then(
      () => {
        this.#inflight.delete(p);
      },
      (err: unknown) => {
        this.#inflight.delete(p);
        this.#failure ??= { err };
      },
    );
    this.#inflight.add(p);
  }
}
