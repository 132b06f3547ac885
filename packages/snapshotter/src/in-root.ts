import { closeSync, constants, fchmodSync, fchownSync, fstatSync, futimesSync, lstatSync, mkdirSync, openSync, readFileSync, readlinkSync, rmdirSync, unlinkSync, type Stats } from 'node:fs';
import path from 'node:path';
import { errnoError } from './apply/fs-helpers.js';
import { MAX_SYMLINKS } from './safe-path.js';

/**
 * Host file operations inside a container root, done through directory file
 * descriptors so that no symlink in the tree is ever followed by the kernel.
 *
 * Node has no openat(2) or openat2(RESOLVE_IN_ROOT), so each walk opens one
 * directory at a time with O_DIRECTORY|O_NOFOLLOW and names the next entry
 * relative to it as `/proc/self/fd/<dirfd>/<name>`: the kernel jumps through
 * the fd's magic link to the directory already open and resolves only
 * `<name>` in it. A component swapped for a symlink between our lstat and
 * our open makes the open fail (ELOOP/ENOTDIR); it never leads outside.
 * Symlinks the tree holds are either refused or followed by us, re-rooted
 * (an absolute target restarts at the root, `..` stops at the root), as
 * resolveInRoot does for paths.
 */

const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

/** `name` inside the directory open as `fd`, as a path the kernel resolves from that directory. */
export function atFd(fd: number, name: string): string {
  return `/proc/self/fd/${fd}/${name}`;
}

export interface WalkOptions {
  /** `follow`: symlinks are followed inside the root; `refuse`: any symlink on the way fails with ELOOP. */
  symlinks: 'follow' | 'refuse';
  /** Whether a symlink in the last component is followed too (stat semantics) or returned as the entry. */
  followFinal: boolean;
  /** Create missing directories on the way (mkdir -p), with these attributes. Else a missing one fails with ENOENT. */
  mkdir?: DirAttrs;
}

/** Owner, mode and mtime of a directory that mkdir creates. */
export interface DirAttrs {
  mode: number;
  uid?: number;
  gid?: number;
  /** Unix time in ms; undefined leaves "now". */
  mtimeMs?: number;
}

/**
 * An open walk: `dirs` are the directory fds from the root (dirs[0]) down
 * to the parent of `name` (undefined when the path is the root itself).
 * `close()` closes them all; call it exactly once.
 */
export interface RootWalk {
  readonly dirs: number[];
  /** The names of dirs[1..] (the directories below the root) in order: `path.join(root, ...names)` is the parent's host path. */
  readonly names: string[];
  readonly name: string | undefined;
  /** The parent directory's fd (the root's when the path has one component). */
  readonly parent: number;
  close(): void;
}

/**
 * Walks `p` (read from the root, `..` never above it) inside `root` by
 * directory fds and stops at its last component, which is neither opened
 * nor required to exist. Throws ENOENT/ENOTDIR for a parent that is missing
 * (unless `mkdir`) or not a directory, ELOOP for a refused symlink or more
 * than MAX_SYMLINKS. `root` itself is trusted (opened as given).
 */
export function walkInRoot(root: string, p: string, opts: WalkOptions): RootWalk {
  const dirs = [openSync(root, constants.O_RDONLY | constants.O_DIRECTORY)];
  const names: string[] = [];
  const closeAll = () => {
    for (const fd of dirs.splice(0)) closeSync(fd);
  };
  const up = () => {
    closeSync(dirs.pop()!);
    names.pop();
  };
  const pending = p.split('/').reverse();
  let links = 0;
  try {
    while (pending.length > 0) {
      const c = pending.pop()!;
      if (c === '' || c === '.') continue;
      if (c === '..') {
        if (dirs.length > 1) up();
        continue;
      }
      const isLast = pending.every((x) => x === '' || x === '.');
      const top = dirs[dirs.length - 1]!;
      const at = atFd(top, c);
      let st = lstatAt(at);
      if (st?.isSymbolicLink() && (!isLast || opts.followFinal)) {
        if (opts.symlinks === 'refuse') throw errnoError('ELOOP', `${p}: a component is a symbolic link`);
        if (++links > MAX_SYMLINKS) throw errnoError('ELOOP', `too many levels of symbolic links resolving ${p}`);
        const target = readlinkSync(at);
        if (target.startsWith('/')) while (dirs.length > 1) up();
        pending.push(...target.split('/').reverse());
        continue;
      }
      if (isLast) return openWalk(dirs, names, c, closeAll);
      if (!st && opts.mkdir) st = makeDir(top, c, opts.mkdir);
      if (!st) throw errnoError('ENOENT', `${p}: no such file or directory`);
      if (!st.isDirectory()) throw errnoError('ENOTDIR', `${p}: not a directory`);
      dirs.push(openSync(at, DIR_FLAGS));
      names.push(c);
    }
    return openWalk(dirs, names, undefined, closeAll);
  } catch (err) {
    closeAll();
    throw err;
  }
}

function openWalk(dirs: number[], names: string[], name: string | undefined, close: () => void): RootWalk {
  return { dirs, names, name, parent: dirs[dirs.length - 1]!, close };
}

function lstatAt(at: string): Stats | undefined {
  try {
    return lstatSync(at);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** mkdir `name` in the directory `dirFd` with `attrs` (set through the new directory's own fd); its lstat. */
function makeDir(dirFd: number, name: string, attrs: DirAttrs): Stats {
  const at = atFd(dirFd, name);
  try {
    mkdirSync(at, 0o700);
  } catch (err) {
    // Made by someone else meanwhile: use it as found.
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return lstatSync(at);
    throw err;
  }
  const fd = openSync(at, DIR_FLAGS);
  try {
    // chown before chmod: chown clears setuid/setgid bits.
    if (attrs.uid !== undefined || attrs.gid !== undefined) fchownSync(fd, attrs.uid ?? -1, attrs.gid ?? -1);
    fchmodSync(fd, attrs.mode & 0o7777);
    if (attrs.mtimeMs !== undefined) futimesSync(fd, attrs.mtimeMs / 1000, attrs.mtimeMs / 1000);
    return fstatSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * `mkdir -p` of `p` inside `root`: symlinks on the way are followed inside
 * the root (a dangling one gets its target created there, as BuildKit's
 * MkdirAll on a root-resolved path does). New directories get `attrs`;
 * existing ones are left alone. Returns the directory's host path below
 * `root` (no symlinks in it below `root`). Throws ENOTDIR when a component
 * exists as a non-directory.
 */
export function mkdirAllInRoot(root: string, p: string, attrs: DirAttrs = { mode: 0o755 }): string {
  const walk = walkInRoot(root, p, { symlinks: 'follow', followFinal: true, mkdir: attrs });
  try {
    if (walk.name === undefined) return root;
    const st = lstatAt(atFd(walk.parent, walk.name)) ?? makeDir(walk.parent, walk.name, attrs);
    if (!st.isDirectory()) throw errnoError('ENOTDIR', `${p}: not a directory`);
    return path.join(root, ...walk.names, walk.name);
  } finally {
    walk.close();
  }
}

/**
 * The bytes of the regular file `p` inside `root`, symlinks followed inside
 * the root. A FIFO, device or directory there fails (EINVAL/EISDIR) without
 * blocking: it is opened O_NONBLOCK and checked by fstat before reading.
 */
export function readFileInRoot(root: string, p: string): Buffer {
  const walk = walkInRoot(root, p, { symlinks: 'follow', followFinal: true });
  try {
    if (walk.name === undefined) throw errnoError('EISDIR', `${p}: is a directory`);
    const fd = openSync(atFd(walk.parent, walk.name), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      const st = fstatSync(fd);
      if (st.isDirectory()) throw errnoError('EISDIR', `${p}: is a directory`);
      if (!st.isFile()) throw errnoError('EINVAL', `${p}: not a regular file`);
      return readFileSync(fd);
    } finally {
      closeSync(fd);
    }
  } finally {
    walk.close();
  }
}

/**
 * Removes the entry `p` inside `root` if it is an empty regular file or an
 * empty directory, never following a symlink anywhere on the way (a path
 * with one is left alone). Meant for mount-point stubs after the container
 * that could have rearranged the tree is gone. Returns whether it removed it.
 */
export function removeEmptyInRoot(root: string, p: string): boolean {
  let walk: RootWalk;
  try {
    walk = walkInRoot(root, p, { symlinks: 'refuse', followFinal: false });
  } catch (err) {
    if (['ENOENT', 'ENOTDIR', 'ELOOP'].includes((err as NodeJS.ErrnoException).code ?? '')) return false;
    throw err;
  }
  try {
    if (walk.name === undefined) return false;
    const at = atFd(walk.parent, walk.name);
    const st = lstatAt(at);
    try {
      if (st?.isDirectory()) rmdirSync(at);
      else if (st?.isFile() && st.size === 0) unlinkSync(at);
      else return false;
    } catch (err) {
      // Not empty (or gone) after all: keep it.
      if (['ENOTEMPTY', 'EEXIST', 'ENOENT'].includes((err as NodeJS.ErrnoException).code ?? '')) return false;
      throw err;
    }
    return true;
  } finally {
    walk.close();
  }
}
