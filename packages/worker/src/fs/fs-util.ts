import { lstatSync, mkdirSync, chmodSync, lchownSync, lutimesSync } from 'node:fs';
import type { Stats } from 'node:fs';
import { resolveInRoot } from '@kiln/snapshotter';

/** lstat that answers undefined for a missing entry. */
export async function lstatOrUndefined(p: string): Promise<Stats | undefined> {
  try {
    return lstatSync(p);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw err;
  }
}

export interface DirAttrs {
  mode: number;
  uid?: number;
  gid?: number;
  /** Unix time in ms; undefined leaves "now". */
  mtimeMs?: number;
}

/**
 * Creates the directory `rel` and its missing parents inside `root`, each
 * component resolved with resolveInRoot (symlinks followed and re-rooted),
 * and returns its host path. Created directories get `attrs`; existing ones
 * are left alone. Throws ENOTDIR when a component exists as a non-directory.
 */
export async function mkdirAllInRoot(root: string, rel: string, attrs: DirAttrs = { mode: 0o755 }): Promise<string> {
  const parts = rel.split('/').filter((c) => c !== '' && c !== '.');
  let prefix = '';
  let resolved = root;
  for (const part of parts) {
    prefix += `/${part}`;
    resolved = await resolveInRoot(root, prefix, { followFinalSymlink: true });
    const st = await lstatOrUndefined(resolved);
    if (!st) {
      mkdirSync(resolved);
      await applyAttrs(resolved, attrs, false);
    } else if (!st.isDirectory()) {
      throw errnoError('ENOTDIR', `${prefix} is not a directory`);
    }
  }
  return resolved;
}

/** chown (when given), chmod (not for symlinks), then mtime; in that order so chown cannot clear setuid bits. */
export async function applyAttrs(p: string, attrs: DirAttrs, isSymlink: boolean): Promise<void> {
  if (attrs.uid !== undefined || attrs.gid !== undefined) lchownSync(p, attrs.uid ?? -1, attrs.gid ?? -1);
  if (!isSymlink) chmodSync(p, attrs.mode & 0o7777);
  if (attrs.mtimeMs !== undefined) {
    const t = attrs.mtimeMs / 1000;
    lutimesSync(p, t, t);
  }
}

export function errnoError(code: string, message: string): NodeJS.ErrnoException {
  return Object.assign(new Error(message), { code });
}

/** A short reason for a filesystem error, e.g. "no such file or directory". */
export function describeFsError(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  switch (e?.code) {
    case 'ENOENT':
      return 'no such file or directory';
    case 'EEXIST':
      return 'file exists';
    case 'ENOTDIR':
      return 'not a directory';
    case 'EISDIR':
      return 'is a directory';
    case 'ENOTEMPTY':
      return 'directory not empty';
    case 'ELOOP':
      return 'too many levels of symbolic links';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'ENOSPC':
      return 'no space left on device';
    default:
      return e instanceof Error ? e.message : String(err);
  }
}
