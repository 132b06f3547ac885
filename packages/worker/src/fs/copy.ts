import { closeSync, constants, copyFileSync, linkSync, mkdirSync, openSync, readdirSync, readlinkSync, readSync, rmSync, statSync, symlinkSync, writeSync } from 'node:fs';
import type { Stats } from 'node:fs';
import path from 'node:path';
import { hasWildcard, matchComponent, PatternMatcher } from '@kiln/common';
import { cleanRootPath, resolveInRoot } from '@kiln/snapshotter';
import { sharedFileCopyPool, type FileCopyJob, type FileCopyPool } from './copy-pool.js';
import type { ModeChange } from './symbolic-mode.js';
import { applyAttrs, applyAttrsToFd, childPath, errnoError, EventLoopYielder, lstatOrUndefined, mkdirAllInRoot, type DirAttrs } from './fs-util.js';

export interface CopyOptions {
  /** Copy a symlink named by `src` as its target (true) or as the link (false). */
  followSymlink: boolean;
  /** A source directory's contents go into `dest` instead of the directory itself. */
  dirCopyContents: boolean;
  /** Create missing parents of `dest`; without it the parent of `dest` must exist. */
  createDestPath: boolean;
  allowWildcard: boolean;
  allowEmptyWildcard: boolean;
  /** Replace an existing directory with a non-directory instead of failing. */
  alwaysReplaceExistingDestPaths: boolean;
  includePatterns: readonly string[];
  excludePatterns: readonly string[];
  /** Permission bits for every copied entry: fixed, or computed from each entry's own (a symbolic chmod). */
  mode?: number | ModeChange;
  /** Owner of every copied or created entry; undefined keeps the source's. */
  chown?: { uid: number; gid: number };
  /** mtime (ms) of every copied or created entry; undefined keeps the source's. */
  mtimeMs?: number;
}

/**
 * Copies `src` (read in `srcRoot`) to `dest` (written in `destRoot`) with
 * the semantics of BuildKit's FileOp copy (fsutil `copy.Copy`):
 *
 * - `dest` ending in "/" names a directory, created if missing;
 * - a non-directory source copied onto an existing directory (or a
 *   directory source without `dirCopyContents` onto an existing path) goes
 *   inside it under its base name;
 * - with `dirCopyContents` a directory's contents merge into `dest`;
 * - with `allowWildcard` each match of a glob in `src` is copied likewise,
 *   and no match is an error unless `allowEmptyWildcard`;
 * - directories are copied recursively; symlinks inside them stay links;
 *   hardlinks among copied files stay hardlinks.
 *
 * Both roots are resolved chroot-style (see resolveInRoot). Errors are
 * errno-style (`code` ENOENT etc.) for the caller to phrase.
 */
export async function copyPath(srcRoot: string, src: string, destRoot: string, dest: string, opts: CopyOptions): Promise<void> {
  const destIsDir = /\/\.?$/.test(dest);
  const destRel = cleanRootPath(dest);
  if (!opts.createDestPath) {
    const p = await resolveInRoot(destRoot, destRel, { followFinalSymlink: true });
    if (!(await lstatOrUndefined(path.dirname(p)))) {
      throw errnoError('ENOENT', `destination directory ${path.posix.dirname(destRel)} does not exist`);
    }
  }
  let srcs = [cleanRootPath(src)];
  if (opts.allowWildcard && hasWildcard(src)) {
    srcs = await resolveWildcards(srcRoot, cleanRootPath(src));
    if (srcs.length === 0) {
      if (opts.allowEmptyWildcard) return;
      throw errnoError('ENOENT', 'no matches found');
    }
  }
  // Directories the copy creates take its --chmod too (as BuildKit: `COPY --chmod=770 f /new/f` gives /new 0770).
  const dirMode = typeof opts.mode === 'function' ? opts.mode(0o40755, true) : (opts.mode ?? 0o755);
  const dirAttrs = { mode: dirMode, uid: opts.chown?.uid, gid: opts.chown?.gid, mtimeMs: opts.mtimeMs };
  await mkdirAllInRoot(destRoot, destIsDir ? destRel : path.posix.dirname(destRel), dirAttrs);
  const destAbs = await resolveInRoot(destRoot, destRel, { followFinalSymlink: true });

  const include = new PatternMatcher(opts.includePatterns);
  const exclude = new PatternMatcher(opts.excludePatterns);
  const copier = new Copier(opts, sharedFileCopyPool());
  for (const s of srcs) {
    const srcAbs = await resolveInRoot(srcRoot, s, { followFinalSymlink: opts.followSymlink });
    const fiSrc = await lstatOrUndefined(srcAbs);
    if (!fiSrc) throw errnoError('ENOENT', 'no such file or directory');
    const fiDest = await statOrUndefined(destAbs);
    let target = destAbs;
    if ((!opts.dirCopyContents && fiSrc.isDirectory() && fiDest) || (!fiSrc.isDirectory() && fiDest?.isDirectory())) {
      const base = path.posix.basename(s);
      if (base !== '') target = path.join(destAbs, base);
    }
    const parent = opts.dirCopyContents && fiSrc.isDirectory() && !fiDest ? target : path.dirname(target);
    await mkdirAllInRoot(destRoot, path.relative(destRoot, parent), dirAttrs);
    const plan = include.empty && exclude.empty ? undefined : await planFiltered(srcAbs, fiSrc, include, exclude);
    try {
      await copier.copy(srcAbs, '', target, plan, false);
    } catch (err) {
      await copier.settle();
      throw err;
    }
    // Each source is complete before the next one looks at what is there.
    await copier.flush();
  }
}

/** Files up to this size are copied by read/write on open fds; larger ones by copyFileSync (reflink or copy_file_range). */
const SMALL_FILE_BYTES = 256 * 1024;
let copyBuffer: Buffer | undefined;

/**
 * Creates `target` (O_EXCL|O_NOFOLLOW) with `src`'s bytes and sets `attrs`
 * on the open file: for a small file 2 opens, a read/write and 3 f-calls
 * instead of copyFileSync's open/fstat/fchmod/ioctl/copy and three path
 * calls after it (a COPY of thousands of small files spent most of its
 * time there).
 */
function copySmallFile(src: string, target: string, size: number, attrs: DirAttrs): void {
  copyBuffer ??= Buffer.allocUnsafe(64 * 1024);
  const input = openSync(src, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const output = openSync(target, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      let total = 0;
      for (;;) {
        const n = readSync(input, copyBuffer, 0, copyBuffer.length, null);
        if (n === 0) break;
        for (let off = 0; off < n; ) off += writeSync(output, copyBuffer, off, n - off);
        total += n;
        // A short read of a regular file is its end: no extra read for the usual small file.
        if (n < copyBuffer.length && total >= size) break;
      }
      applyAttrsToFd(output, attrs);
    } finally {
      closeSync(output);
    }
  } finally {
    closeSync(input);
  }
}

/** Small files per batch handed to the copy pool; the first batch of a copy is copied inline (a COPY of a few files starts no thread). */
const POOL_BATCH = 64;
/** Batches in flight at once: bounds the queued paths, keeps every thread fed. */
const POOL_WINDOW = 8;

class Copier {
  /** "dev:ino" of a copied multi-link file -> its first copy, to link again. */
  private readonly inodes = new Map<string, string>();
  private readonly yielder = new EventLoopYielder();
  /** Small files waiting for the pool (see POOL_BATCH). */
  private batch: FileCopyJob[] = [];
  /** The directory the batch's files go into, and its lane (see FileCopyPool.run). */
  private batchDir = '';
  private lane = 0;
  private smallFiles = 0;
  private readonly inflight = new Set<Promise<void>>();
  private failure: { err: unknown } | undefined;
  /**
   * Directory attributes to set once the pool's files are in (creating a
   * file changes its directory's mtime), in the order the inline copy sets
   * them: a directory after everything below it.
   */
  private readonly dirInfos: { fi: Stats; target: string }[] = [];

  constructor(
    private readonly opts: CopyOptions,
    private readonly pool?: FileCopyPool,
  ) {}

  /** `inFreshDir`: `target`'s parent was just created by this copy, so nothing is there yet (no lstat needed). */
  async copy(src: string, rel: string, target: string, plan: Set<string> | undefined, inFreshDir: boolean): Promise<void> {
    await this.yielder.tick();
    if (this.failure) throw this.failure.err;
    const fi = lstatOrUndefined(src);
    if (!fi) throw errnoError('ENOENT', `${src} disappeared while it was copied`);
    const existing = inFreshDir ? undefined : lstatOrUndefined(target);
    if (fi.isDirectory()) {
      let created = false;
      if (existing && !existing.isDirectory()) {
        if (!this.opts.alwaysReplaceExistingDestPaths && !existing.isSymbolicLink()) {
          throw errnoError('ENOTDIR', `cannot copy directory to non-directory ${path.basename(target)}`);
        }
        rmSync(target, { force: true });
      }
      if (!existing || !existing.isDirectory()) {
        mkdirSync(target);
        created = true;
      }
      for (const name of (readdirSync(src)).sort()) {
        const childRel = rel === '' ? name : `${rel}/${name}`;
        if (plan && !plan.has(childRel)) continue;
        await this.copy(childPath(src, name), childRel, childPath(target, name), plan, created);
      }
      // An existing directory keeps its own metadata (as `cp -a` onto it would),
      // unless the copy sets mode/owner/time explicitly.
      if (created || (rel !== '' && (this.opts.mode !== undefined || this.opts.chown || this.opts.mtimeMs !== undefined))) {
        this.dirInfo(fi, target);
      }
      return;
    }
    if (existing) {
      if (existing.isDirectory()) {
        if (!this.opts.alwaysReplaceExistingDestPaths) throw errnoError('EISDIR', `cannot replace directory ${path.basename(target)} with a file`);
        rmSync(target, { recursive: true, force: true });
      } else {
        rmSync(target, { force: true });
      }
    }
    if (fi.isFile()) {
      const inode = `${fi.dev}:${fi.ino}`;
      const first = fi.nlink > 1 ? this.inodes.get(inode) : undefined;
      if (first !== undefined) {
        linkSync(first, target);
        return;
      }
      if (fi.size <= SMALL_FILE_BYTES) {
        // A multi-link file is copied here, not on the pool: its later links need it in place.
        if (fi.nlink === 1 && this.pool && this.smallFiles++ >= POOL_BATCH) await this.queue({ src, target, size: fi.size, ...this.jobAttrsOf(fi) });
        else copySmallFile(src, target, fi.size, this.attrsOf(fi));
      } else {
        copyFileSync(src, target, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE);
        this.copyInfo(fi, target, false);
      }
      if (fi.nlink > 1) this.inodes.set(inode, target);
    } else if (fi.isSymbolicLink()) {
      symlinkSync(readlinkSync(src), target);
      this.copyInfo(fi, target, true);
    } else {
      throw errnoError('EINVAL', `cannot copy ${path.basename(src)}: unsupported file type`);
    }
  }

  /**
   * Waits for every file handed to the pool, then sets the deferred
   * directory attributes; throws the first failure. Call once a source is
   * copied.
   */
  async flush(): Promise<void> {
    this.dispatch();
    while (this.inflight.size > 0) await Promise.race(this.inflight);
    if (this.failure) throw this.failure.err;
    for (const d of this.dirInfos.splice(0)) this.copyInfo(d.fi, d.target, false);
  }

  /** Waits for the pool's files without looking at failures (after a failed walk: nothing may still be writing). */
  async settle(): Promise<void> {
    this.batch = [];
    while (this.inflight.size > 0) await Promise.race(this.inflight);
  }

  private dirInfo(fi: Stats, target: string): void {
    if (this.smallFiles > POOL_BATCH) this.dirInfos.push({ fi, target });
    else this.copyInfo(fi, target, false);
  }

  private async queue(job: FileCopyJob): Promise<void> {
    const dir = path.dirname(job.target);
    if (dir !== this.batchDir) {
      this.dispatch();
      this.batchDir = dir;
      this.lane++;
    }
    this.batch.push(job);
    if (this.batch.length < POOL_BATCH) return;
    this.dispatch();
    while (this.inflight.size >= POOL_WINDOW) await Promise.race(this.inflight);
    if (this.failure) throw this.failure.err;
  }

  private dispatch(): void {
    if (this.batch.length === 0 || !this.pool) return;
    const jobs = this.batch;
    this.batch = [];
    const p: Promise<void> = this.pool.run(jobs, this.lane).then(
      () => {
        this.inflight.delete(p);
      },
      (err: unknown) => {
        this.inflight.delete(p);
        this.failure ??= { err };
      },
    );
    this.inflight.add(p);
  }

  private copyInfo(fi: Stats, target: string, isSymlink: boolean): void {
    applyAttrs(target, this.attrsOf(fi), isSymlink);
  }

  private jobAttrsOf(fi: Stats): { mode: number; uid: number; gid: number; mtimeMs?: number } {
    const a = this.attrsOf(fi);
    return { mode: a.mode, uid: a.uid!, gid: a.gid!, ...(a.mtimeMs !== undefined ? { mtimeMs: a.mtimeMs } : {}) };
  }

  private attrsOf(fi: Stats): DirAttrs {
    return {
      uid: this.opts.chown?.uid ?? fi.uid,
      gid: this.opts.chown?.gid ?? fi.gid,
      mode: typeof this.opts.mode === 'function' ? (fi.mode & ~0o7777) | this.opts.mode(fi.mode, fi.isDirectory()) : (this.opts.mode ?? fi.mode),
      mtimeMs: this.opts.mtimeMs ?? fi.mtimeMs,
    };
  }
}

/**
 * The relative paths under a copied directory that pass the include and
 * exclude patterns, plus the directories leading to them.
 */
async function planFiltered(srcAbs: string, fiSrc: Stats, include: PatternMatcher, exclude: PatternMatcher): Promise<Set<string>> {
  const out = new Set<string>();
  if (!fiSrc.isDirectory()) return out;
  const walk = async (abs: string, rel: string): Promise<boolean> => {
    let any = false;
    for (const ent of readdirSync(abs, { withFileTypes: true })) {
      const childRel = rel === '' ? ent.name : `${rel}/${ent.name}`;
      const isDir = ent.isDirectory();
      const excluded = !exclude.empty && exclude.matches(childRel);
      if (excluded && !(isDir && exclude.hasExceptions)) continue;
      const included = include.empty || include.matches(childRel);
      let keep = included && !excluded;
      if (isDir && (included || include.mayMatchUnder(childRel))) {
        if (await walk(path.join(abs, ent.name), childRel)) keep = true;
      }
      if (keep) {
        out.add(childRel);
        any = true;
      }
    }
    return any;
  };
  await walk(srcAbs, '');
  return out;
}

/**
 * Expands a glob in the root-relative path `p` (components with `*`, `?`,
 * `[`) against `root`, returning matching root-relative paths in sorted
 * order. Non-glob components are resolved chroot-style.
 */
export async function resolveWildcards(root: string, p: string): Promise<string[]> {
  const parts = p.split('/').filter(Boolean);
  let current: string[] = [''];
  for (const part of parts) {
    const next: string[] = [];
    for (const base of current) {
      if (!hasWildcard(part)) {
        next.push(`${base}/${part.replace(/\\(.)/g, '$1')}`);
        continue;
      }
      const dir = await resolveInRoot(root, base || '/', { followFinalSymlink: true });
      let names: string[];
      try {
        names = readdirSync(dir);
      } catch {
        continue;
      }
      for (const name of names.sort()) if (matchComponent(part, name)) next.push(`${base}/${name}`);
    }
    current = next;
  }
  const found: string[] = [];
  for (const c of current) {
    if (await lstatOrUndefined(await resolveInRoot(root, c, { followFinalSymlink: false }))) found.push(c);
  }
  return found;
}

async function statOrUndefined(p: string): Promise<Stats | undefined> {
  try {
    return statSync(p);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ELOOP') return undefined;
    throw err;
  }
}
