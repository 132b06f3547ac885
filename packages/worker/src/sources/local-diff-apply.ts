import { createHash } from 'node:crypto';
import { constants, copyFileSync, lutimesSync, mkdirSync, rmSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { writeNewFile, type ContextChange, type ContextEntry } from '@kiln/common';
import { applyAttrs, lstatOrUndefined, resolveInRoot } from '@kiln/snapshotter';
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
  let changed = 0;
  let deleted = 0;
  let contentBytes = 0;

  for await (const change of o.changes) {
    o.signal?.throwIfAborted();
    if (change.kind === 'delete') {
      deleted++;
      dropSubtree(manifest, change.path, true);
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
    const parent = await mkdirInRoot(o.root, parentRel);
    const target = path.join(parent, path.posix.basename(e.path));
    const existing = lstatOrUndefined(target);
    const entry: ManifestEntry = { ...e };
    if (e.type === 'dir') {
      if (existing && !existing.isDirectory()) rmSync(target, { recursive: true, force: true });
      if (!existing || !existing.isDirectory()) mkdirSync(target);
      applyAttrs(target, { mode: e.mode, uid: e.uid, gid: e.gid }, false);
      dirty.add(e.path);
    } else {
      if (existing) rmSync(target, { recursive: true, force: true });
      // A directory replaced by a file or link takes its children with it.
      dropSubtree(manifest, e.path, false);
      if (e.type === 'file') {
        const hash = createHash('sha256');
        let n = 0;
        await writeNewFile(target, (async function* () {
          for await (const part of change.body) {
            hash.update(part);
            n += part.length;
            yield part;
          }
        })());
        if (n !== e.size) throw new OpFailure(`failed to receive context: ${e.path} carried ${n} of ${e.size} bytes`, { details: { path: e.path } });
        contentBytes += n;
        entry.sha256 = hash.digest('hex');
      } else {
        symlinkSync(e.linkname, target);
      }
      applyAttrs(target, { mode: e.mode, uid: e.uid, gid: e.gid, mtimeMs: e.mtimeMs }, e.type === 'symlink');
    }
    manifest.set(e.path, entry);
    written.add(e.path);
    markParent(dirty, e.path);
  }

  if (!o.seeded && o.baseRoot !== undefined) {
    for (const rel of sortedPaths(manifest.keys())) {
      if (written.has(rel)) continue;
      await copyFromBase(o.root, o.baseRoot, manifest.get(rel)!);
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
  return [...paths]
    .map((p) => ({ p, parts: p.split('/') }))
    .sort((a, b) => {
      const n = Math.min(a.parts.length, b.parts.length);
      for (let i = 0; i < n; i++) {
        const x = a.parts[i]!;
        const y = b.parts[i]!;
        if (x !== y) return x < y ? -1 : 1;
      }
      return a.parts.length - b.parts.length;
    })
    .map((x) => x.p);
}

function markParent(dirty: Set<string>, rel: string): void {
  const parent = path.posix.dirname(rel);
  if (parent !== '.') dirty.add(parent);
}

/** Removes `rel` (and, when `self`, itself) plus everything below it from the manifest. */
function dropSubtree(manifest: ContextManifest, rel: string, self: boolean): void {
  if (self) manifest.delete(rel);
  const prefix = `${rel}/`;
  for (const k of manifest.keys()) if (k.startsWith(prefix)) manifest.delete(k);
}

/** Creates (0755, as the manifest fixes them later) and resolves directory `rel` inside `root`. */
async function mkdirInRoot(root: string, rel: string): Promise<string> {
  if (rel === '.' || rel === '') return root;
  let resolved = root;
  let prefix = '';
  for (const part of rel.split('/')) {
    prefix += `/${part}`;
    resolved = await resolveInRoot(root, prefix, { followFinalSymlink: false });
    const st = lstatOrUndefined(resolved);
    if (!st) mkdirSync(resolved, 0o755);
    else if (!st.isDirectory()) throw new OpFailure(`failed to receive context: ${prefix.slice(1)} is not a directory`, { details: { path: rel } });
  }
  return resolved;
}

async function removeInRoot(root: string, rel: string): Promise<void> {
  const parentRel = path.posix.dirname(rel);
  const parent = parentRel === '.' ? root : await resolveInRoot(root, parentRel, { followFinalSymlink: false });
  if (!lstatOrUndefined(parent)?.isDirectory()) return;
  rmSync(path.join(parent, path.posix.basename(rel)), { recursive: true, force: true });
}

async function copyFromBase(root: string, baseRoot: string, e: ManifestEntry): Promise<void> {
  const parent = await mkdirInRoot(root, path.posix.dirname(e.path));
  const target = path.join(parent, path.posix.basename(e.path));
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
