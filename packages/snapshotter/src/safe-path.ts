import { lstatSync, readlinkSync } from 'node:fs';
import path from 'node:path';

/** Most symlinks followed while resolving one path (Linux gives up at 40; we allow more). */
export const MAX_SYMLINKS = 255;

export interface ResolveInRootOptions {
  /**
   * Whether a symlink in the last component is followed (stat semantics) or
   * returned as the link itself (lstat semantics: use this to create,
   * replace or remove the entry at `p`).
   */
  followFinalSymlink: boolean;
}

/**
 * Resolves `p` (absolute or relative, both read from the root) inside `root`
 * as if the process were chrooted there, and returns the host path.
 *
 * Symlinks are followed one component at a time and re-rooted: an absolute
 * target restarts at `root`, `..` never climbs above `root`, and chains are
 * followed up to MAX_SYMLINKS (then an error with code "ELOOP"). Components
 * that do not exist (or sit under a non-directory) are kept as written, so
 * the result also names where a new entry would be created.
 *
 * `root` itself is trusted: pass an absolute, already resolved directory.
 * The result is only as safe as the tree is still: a concurrent writer could
 * swap a component for a symlink after it was checked, so resolve inside
 * trees that only the caller writes (an active snapshot it owns).
 */
export async function resolveInRoot(root: string, p: string, opts: ResolveInRootOptions): Promise<string> {
  const resolved: string[] = [];
  const pending = p.split('/').reverse();
  let links = 0;
  while (pending.length > 0) {
    const c = pending.pop()!;
    if (c === '' || c === '.') continue;
    if (c === '..') {
      resolved.pop();
      continue;
    }
    const isLast = pending.every((x) => x === '' || x === '.');
    const candidate = path.join(root, ...resolved, c);
    if (!isLast || opts.followFinalSymlink) {
      const target = await readSymlink(candidate);
      if (target !== undefined) {
        if (++links > MAX_SYMLINKS) {
          throw Object.assign(new Error(`too many levels of symbolic links resolving ${p}`), { code: 'ELOOP' });
        }
        if (target.startsWith('/')) resolved.length = 0;
        pending.push(...target.split('/').reverse());
        continue;
      }
    }
    resolved.push(c);
  }
  return path.join(root, ...resolved);
}

/** The target of `p` if it is a symlink; undefined if it is anything else or absent. */
async function readSymlink(p: string): Promise<string | undefined> {
  try {
    const st = lstatSync(p);
    if (!st.isSymbolicLink()) return undefined;
    return readlinkSync(p);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw err;
  }
}

/**
 * `p` cleaned as an absolute path inside a root ("a/../b/" -> "/b"); `..`
 * cannot climb above "/". Trailing slashes are dropped.
 */
export function cleanRootPath(p: string): string {
  return path.posix.normalize(`/${p}`).replace(/(.)\/+$/, '$1');
}
