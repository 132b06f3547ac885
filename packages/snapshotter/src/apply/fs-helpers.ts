import { chmodSync, fchmodSync, fchownSync, futimesSync, lchownSync, lstatSync, lutimesSync, type Stats } from 'node:fs';

/**
 * lstat that answers undefined for a missing entry. A missing final entry
 * costs no exception (`throwIfNoEntry`: building a JS error per new file
 * was a visible share of a copy of thousands of files).
 */
export function lstatOrUndefined(p: string): Stats | undefined {
  try {
    return lstatSync(p, { throwIfNoEntry: false });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw err;
  }
}

export interface EntryAttrs {
  mode: number;
  uid?: number;
  gid?: number;
  /** Unix time in ms; undefined leaves "now". */
  mtimeMs?: number;
}

/** chown, chmod (not for symlinks), then mtime; in that order so chown cannot clear setuid bits. */
export function applyAttrs(p: string, attrs: EntryAttrs, isSymlink: boolean): void {
  if (attrs.uid !== undefined || attrs.gid !== undefined) lchownSync(p, attrs.uid ?? -1, attrs.gid ?? -1);
  if (!isSymlink) chmodSync(p, attrs.mode & 0o7777);
  if (attrs.mtimeMs !== undefined) {
    const t = attrs.mtimeMs / 1000;
    lutimesSync(p, t, t);
  }
}

/** applyAttrs on an open file (same order), sparing three path lookups per file. */
export function applyAttrsToFd(fd: number, attrs: EntryAttrs): void {
  if (attrs.uid !== undefined || attrs.gid !== undefined) fchownSync(fd, attrs.uid ?? -1, attrs.gid ?? -1);
  fchmodSync(fd, attrs.mode & 0o7777);
  if (attrs.mtimeMs !== undefined) {
    const t = attrs.mtimeMs / 1000;
    futimesSync(fd, t, t);
  }
}

export function errnoError(code: string, message: string): NodeJS.ErrnoException {
  return Object.assign(new Error(message), { code });
}
