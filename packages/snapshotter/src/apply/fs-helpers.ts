import { chmodSync, lchownSync, lstatSync, lutimesSync, mkdirSync, type Stats } from 'node:fs';
import { resolveInRoot } from '../safe-path.js';

/** lstat that answers undefined for a missing entry. */
export function lstatOrUndefined(p: string): Stats | undefined {
  try {
    return lstatSync(p);
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

/**
 * Creates the directory `rel` and its missing parents inside `root`, each
 * component resolved with resolveInRoot (symlinks followed and re-rooted),
 * and returns its host path. New directories get mode 0755, owned by root.
 * Throws ENOTDIR when a component exists as a non-directory.
 */
export async function mkdirAllInRoot(root: string, rel: string): Promise<string> {
  const parts = rel.split('/').filter((c) => c !== '' && c !== '.');
  let prefix = '';
  let resolved = root;
  for (const part of parts) {
    prefix += `/${part}`;
    resolved = await resolveInRoot(root, prefix, { followFinalSymlink: true });
    const st = lstatOrUndefined(resolved);
    if (!st) {
      mkdirSync(resolved);
      chmodSync(resolved, 0o755);
    } else if (!st.isDirectory()) throw errnoError('ENOTDIR', `${prefix} is not a directory`);
  }
  return resolved;
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

export function errnoError(code: string, message: string): NodeJS.ErrnoException {
  return Object.assign(new Error(message), { code });
}
