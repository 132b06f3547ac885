import { mkdirSync } from 'node:fs';
import { applyAttrs, errnoError, lstatOrUndefined, resolveInRoot, type EntryAttrs } from '@kiln/snapshotter';

// One implementation of these lives with the layer applier in @kiln/snapshotter.
export { applyAttrs, errnoError, lstatOrUndefined };

/** Owner, mode and mtime given to directories a copy or mkdir creates. */
export type DirAttrs = EntryAttrs;

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
