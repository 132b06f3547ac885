import { constants } from 'node:fs';
import { mkdir, open, rm, stat, symlink } from 'node:fs/promises';
import path from 'node:path';
import type { llb } from '@kiln/api';
import { hasWildcard } from '@kiln/common';
import { cleanRootPath, resolveInRoot } from '@kiln/snapshotter';
import { copyPath } from '../fs/copy.js';
import { applyAttrs, errnoError, lstatOrUndefined, mkdirAllInRoot } from '../fs/fs-util.js';
import { resolveWildcards } from '../fs/copy.js';
import { resolveChown } from '../fs/users.js';
import { parseSymbolicMode } from '../fs/symbolic-mode.js';
import { unpackIfArchive } from '../fs/unpack.js';

/** Unix seconds (-1 or absent: none) as ms. */
function timestampMs(ts: bigint): number | undefined {
  return ts >= 0n ? Number(ts) * 1000 : undefined;
}

/** mkdir in the tree `root` (BuildKit semantics: an existing path is fine). */
export async function mkdirAction(root: string, a: llb.FileActionMkDir): Promise<void> {
  const rel = cleanRootPath(a.path);
  const owner = await resolveChown(root, a.owner);
  const attrs = { mode: a.mode, uid: owner?.uid, gid: owner?.gid, mtimeMs: timestampMs(a.timestamp) };
  if (a.makeParents) {
    await mkdirAllInRoot(root, rel, attrs);
    return;
  }
  const target = await resolveInRoot(root, rel, { followFinalSymlink: true });
  try {
    await mkdir(target);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return;
    throw err;
  }
  await applyAttrs(target, attrs, false);
}

/** Writes a file (replacing the content of an existing one, through a symlink resolved inside `root`). */
export async function mkfileAction(root: string, a: llb.FileActionMkFile): Promise<void> {
  const target = await resolveInRoot(root, cleanRootPath(a.path), { followFinalSymlink: true });
  const owner = await resolveChown(root, a.owner);
  const fh = await open(target, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW, 0o600);
  try {
    await fh.write(a.data);
  } finally {
    await fh.close();
  }
  await applyAttrs(target, { mode: a.mode, uid: owner?.uid, gid: owner?.gid, mtimeMs: timestampMs(a.timestamp) }, false);
}

/** Removes a path (recursively); the last component is never followed. */
export async function rmAction(root: string, a: llb.FileActionRm): Promise<void> {
  const rel = cleanRootPath(a.path);
  const paths = a.allowWildcard && hasWildcard(a.path) ? await resolveWildcards(root, rel) : [rel];
  for (const p of paths) {
    if (p === '/') throw errnoError('EINVAL', 'cannot remove the root directory');
    const target = await resolveInRoot(root, p, { followFinalSymlink: false });
    if (!a.allowNotFound && !(await lstatOrUndefined(target))) throw errnoError('ENOENT', 'no such file or directory');
    await rm(target, { recursive: true, force: true });
  }
}

/** Creates the symlink `newpath` -> `oldpath` (kept verbatim). */
export async function symlinkAction(root: string, a: llb.FileActionSymlink): Promise<void> {
  const rel = cleanRootPath(a.newpath);
  if (rel === '/') throw errnoError('EEXIST', 'file exists');
  const parent = await resolveInRoot(root, path.posix.dirname(rel), { followFinalSymlink: true });
  const target = path.join(parent, path.posix.basename(rel));
  const owner = await resolveChown(root, a.owner);
  await symlink(a.oldpath, target);
  await applyAttrs(target, { mode: 0o777, uid: owner?.uid, gid: owner?.gid, mtimeMs: timestampMs(a.timestamp) }, true);
}

/** Copies from the tree `srcRoot` into `destRoot`; see copyPath. */
export async function copyAction(srcRoot: string, destRoot: string, a: llb.FileActionCopy): Promise<void> {
  if (a.parents) {
    await copyWithParents(srcRoot, destRoot, a, await resolveChown(destRoot, a.owner));
    return;
  }
  let sources = [a.src];
  const chown = await resolveChown(destRoot, a.owner);
  if (a.attemptUnpackDockerCompatibility) {
    // ADD: local tar archives (plain or compressed) are extracted into dest (owned by --chown
    // when given); other files are copied.
    const matches = a.allowWildcard && hasWildcard(a.src) ? await resolveWildcards(srcRoot, cleanRootPath(a.src)) : [a.src];
    const rest: string[] = [];
    for (const m of matches) if (!(await unpackIfArchive(srcRoot, m, destRoot, a.dest, { owner: chown }))) rest.push(m);
    if (rest.length < matches.length) sources = rest;
  }
  for (const src of sources) await copyOne(srcRoot, src, destRoot, a, chown);
}

/**
 * `COPY --parents`: `src` is `PIVOT/./PATH` (or `PATH`, pivot `/`); what
 * PATH matches (wildcards and `**` included) is copied into the directory
 * `dest` with its path below the pivot kept, as BuildKit does it
 * (`--parents ./x/a.txt /dst/` gives /dst/x/a.txt). The pivot may hold
 * wildcards too: each directory it matches is a pivot of its own (pivot
 * `/a/b*` with PATH `c/x` copies `c/x` of both `/a/b` and `/a/b2`). A PATH
 * without wildcards must exist below some pivot; one with wildcards may
 * match nothing only with `allowEmptyWildcard`.
 */
async function copyWithParents(srcRoot: string, destRoot: string, a: llb.FileActionCopy, chown: Awaited<ReturnType<typeof resolveChown>>): Promise<void> {
  const at = a.src.indexOf('/./');
  const pivotPattern = at >= 0 ? cleanRootPath(a.src.slice(0, at) || '/') : '/';
  const rel = cleanRootPath(at >= 0 ? a.src.slice(at + 3) : a.src).slice(1);
  if (a.includePatterns.length > 0) throw errnoError('EINVAL', 'a copy with parents takes its pattern from src, not include patterns');
  const dest = a.dest.endsWith('/') ? a.dest : `${a.dest}/`;
  const pivots = hasWildcard(pivotPattern) ? await resolveWildcards(srcRoot, pivotPattern) : [pivotPattern];
  if (pivots.length === 0) {
    if (a.allowEmptyWildcard) return;
    throw errnoError('ENOENT', 'no matches found');
  }
  if (rel === '') {
    for (const pivot of pivots) await copyOne(srcRoot, pivot, destRoot, { ...a, dest, dirCopyContents: true, allowWildcard: false }, chown);
    return;
  }
  const found = async (pivot: string): Promise<boolean> => {
    // A pivot a wildcard matched may be a file: nothing lies below it.
    if (!(await statOrUndefined(await resolveInRoot(srcRoot, pivot, { followFinalSymlink: true })))?.isDirectory()) return false;
    const full = path.posix.join(pivot, rel);
    if (!hasWildcard(rel)) return (await lstatOrUndefined(await resolveInRoot(srcRoot, full, { followFinalSymlink: false }))) !== undefined;
    return rel.includes('**') || (await resolveWildcards(srcRoot, full)).length > 0;
  };
  let any = false;
  for (const pivot of pivots) if (await found(pivot)) any = true;
  if (!any && !(hasWildcard(rel) && a.allowEmptyWildcard)) throw errnoError('ENOENT', hasWildcard(rel) ? 'no matches found' : 'no such file or directory');
  for (const pivot of pivots) {
    if (!(await found(pivot))) continue;
    const opts = { ...a, dest, dirCopyContents: true, allowWildcard: false, createDestPath: true, includePatterns: [rel] };
    await copyOne(srcRoot, pivot, destRoot, opts, chown);
  }
}

async function statOrUndefined(p: string) {
  return stat(p).catch(() => undefined);
}

async function copyOne(srcRoot: string, src: string, destRoot: string, a: llb.FileActionCopy, chown: Awaited<ReturnType<typeof resolveChown>>): Promise<void> {
  await copyPath(srcRoot, src, destRoot, a.dest, {
    followSymlink: a.followSymlink,
    dirCopyContents: a.dirCopyContents,
    createDestPath: a.createDestPath,
    allowWildcard: a.allowWildcard,
    allowEmptyWildcard: a.allowEmptyWildcard,
    alwaysReplaceExistingDestPaths: a.alwaysReplaceExistingDestPaths,
    includePatterns: a.includePatterns,
    excludePatterns: a.excludePatterns,
    mode: a.modeStr ? parseSymbolicMode(a.modeStr) : a.mode >= 0 ? a.mode : undefined,
    chown,
    mtimeMs: timestampMs(a.timestamp),
  });
}
