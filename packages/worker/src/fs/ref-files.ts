import { closeSync, constants, fstatSync, lstatSync, openSync, readdirSync, readlinkSync, readSync, type Stats } from 'node:fs';
import { InvalidArgumentError, NotFoundError, matchComponent } from '@kiln/common';
import { atFd, walkInRoot } from '@kiln/snapshotter';

/** One path of a ref as the gateway describes it (see worker.proto FileStat). */
export interface RefFileStat {
  path: string;
  /** Unix st_mode (type bits and permissions). */
  mode: number;
  size: bigint;
  modTimeUnixNano: bigint;
  uid: number;
  gid: number;
  linkname: string;
}

/** Most bytes one ReadFile returns. */
export const REF_READ_MAX = 16 * 1024 * 1024;

/**
 * Reads up to `length` bytes (0: the rest, capped at REF_READ_MAX) from
 * `offset` of the regular file `p` inside `root`. Symlinks are followed
 * inside the root only (the walk is by directory fds, so a link a build
 * step planted never leads out). Errors name the path.
 */
export function readRefFile(root: string, p: string, offset: number, length: number): Buffer {
  if (offset < 0 || length < 0) throw new InvalidArgumentError(`invalid range ${offset}+${length} for ${p}`, 'offset');
  const walk = openIn(root, p, true);
  try {
    if (walk.name === undefined) throw new InvalidArgumentError(`${p} is a directory`, 'path');
    const fd = openOrNotFound(atFd(walk.parent, walk.name), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK, p);
    try {
      const st = fstatSync(fd);
      if (st.isDirectory()) throw new InvalidArgumentError(`${p} is a directory`, 'path');
      if (!st.isFile()) throw new InvalidArgumentError(`${p} is not a regular file`, 'path');
      const want = Math.min(length === 0 ? REF_READ_MAX : length, REF_READ_MAX, Math.max(0, st.size - offset));
      const buf = Buffer.alloc(want);
      let got = 0;
      while (got < want) {
        const n = readSync(fd, buf, got, want - got, offset + got);
        if (n === 0) break;
        got += n;
      }
      return buf.subarray(0, got);
    } finally {
      closeSync(fd);
    }
  } finally {
    walk.close();
  }
}

/** The stat of `p` inside `root` (a final symlink described, not followed). */
export function statRefFile(root: string, p: string): RefFileStat {
  const walk = openIn(root, p, false);
  try {
    const at = walk.name === undefined ? atFd(walk.parent, '.') : atFd(walk.parent, walk.name);
    const st = lstatOrNotFound(at, p);
    return toStat(p, st, st.isSymbolicLink() ? readlinkSync(at) : '');
  } finally {
    walk.close();
  }
}

/** The entries of directory `p` inside `root` (symlinks on the way followed inside it), sorted by name, filtered by `pattern` when given. */
export function readRefDir(root: string, p: string, pattern: string): RefFileStat[] {
  const walk = openIn(root, p, true);
  let dirFd: number | undefined;
  try {
    dirFd = walk.name === undefined ? undefined : openOrNotFound(atFd(walk.parent, walk.name), constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW, p);
    const dir = dirFd ?? walk.parent;
    const out: RefFileStat[] = [];
    for (const name of readdirSync(atFd(dir, '.')).sort()) {
      if (pattern && !matchComponent(pattern, name)) continue;
      const at = atFd(dir, name);
      const st = lstatSync(at);
      out.push(toStat(name, st, st.isSymbolicLink() ? readlinkSync(at) : ''));
    }
    return out;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') throw new InvalidArgumentError(`${p} is not a directory`, 'path');
    throw err;
  } finally {
    if (dirFd !== undefined) closeSync(dirFd);
    walk.close();
  }
}

function openIn(root: string, p: string, followFinal: boolean): ReturnType<typeof walkInRoot> {
  try {
    return walkInRoot(root, p, { symlinks: 'follow', followFinal });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new NotFoundError(`${p}: no such file or directory`, { path: p });
    if (code === 'ENOTDIR') throw new InvalidArgumentError(`${p}: a parent is not a directory`, 'path');
    throw err;
  }
}

function openOrNotFound(at: string, flags: number, p: string): number {
  try {
    return openSync(at, flags);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`${p}: no such file or directory`, { path: p });
    throw err;
  }
}

function lstatOrNotFound(at: string, p: string): Stats {
  try {
    return lstatSync(at);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`${p}: no such file or directory`, { path: p });
    throw err;
  }
}

function toStat(path: string, st: Stats, linkname: string): RefFileStat {
  return { path, mode: st.mode, size: BigInt(st.size), modTimeUnixNano: BigInt(Math.round(st.mtimeMs)) * 1_000_000n, uid: st.uid, gid: st.gid, linkname };
}
