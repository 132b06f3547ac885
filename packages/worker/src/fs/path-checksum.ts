import { createHash } from 'node:crypto';
import { closeSync, lstatSync, openSync, readdirSync, readlinkSync, readSync, type Stats } from 'node:fs';
import path from 'node:path';
import { hasWildcard } from '@kiln/common';
import { cleanRootPath, lstatOrUndefined, resolveInRoot } from '@kiln/snapshotter';
import { resolveWildcards } from './copy.js';
import { childPath, EventLoopYielder } from './fs-util.js';

/** A path an op reads from one input (see PathSelector in worker.proto). */
export interface PathSelector {
  path: string;
  wildcard: boolean;
  followSymlink: boolean;
}

/**
 * Where a file's content digest comes from when it is already known (a
 * local source's manifest): `rel` is the root-relative path, `st` its
 * lstat. Undefined means "read and hash the file".
 */
export type KnownFileDigest = (rel: string, st: Stats) => string | undefined;

/**
 * sha256 of what `sel` selects in the tree `root`: for each match (one, or
 * every wildcard match with its path) the selected entry and, for a
 * directory, everything below it: relative path, type, permission bits,
 * uid/gid, symlink target, file content. Mtimes never count, so a touched
 * file keeps its checksum. Paths resolve as a FileOp copy resolves them
 * (chroot-style, see resolveInRoot); a missing path is hashed as missing.
 */
export async function selectorChecksum(root: string, sel: PathSelector, known?: KnownFileDigest): Promise<string> {
  const h = createHash('sha256');
  const clean = cleanRootPath(sel.path);
  const matches = sel.wildcard && hasWildcard(sel.path) ? await resolveWildcards(root, clean) : [clean];
  const yielder = new EventLoopYielder();
  for (const m of matches) {
    const abs = await resolveInRoot(root, m, { followFinalSymlink: sel.followSymlink });
    const st = await lstatOrUndefined(abs);
    h.update(`${JSON.stringify(['match', m])}\n`);
    if (!st) {
      h.update('missing\n');
      continue;
    }
    await hashTree(h, root, abs, '', st, known, yielder);
  }
  return `sha256:${h.digest('hex')}`;
}

/** Hashes `abs` (already lstat'ed) and what is below it, in sorted path order; `rel` is relative to the selected entry. */
async function hashTree(
  h: ReturnType<typeof createHash>,
  root: string,
  abs: string,
  rel: string,
  st: Stats,
  known: KnownFileDigest | undefined,
  yielder: EventLoopYielder,
): Promise<void> {
  // Sync calls: a promise per entry costs a thread-pool round trip (see ARCHITECTURE "Hot paths").
  await yielder.tick();
  const type = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : 'other';
  let body = '';
  if (type === 'file') body = known?.(path.relative(root, abs), st) ?? fileSha256(abs);
  else if (type === 'symlink') body = readlinkSync(abs);
  else if (type === 'other') body = `${st.mode & 0o170000}:${st.rdev}`;
  h.update(`${JSON.stringify([rel, type, st.mode & 0o7777, st.uid, st.gid, body])}\n`);
  if (type !== 'dir') return;
  for (const name of readdirSync(abs).sort()) {
    const child = childPath(abs, name);
    await hashTree(h, root, child, rel ? `${rel}/${name}` : name, lstatSync(child), known, yielder);
  }
}

const CHUNK = 1 << 20;
let buffer: Buffer | undefined;

/** sha256 (hex) of a file's bytes, read in 1 MiB chunks. */
export function fileSha256(file: string): string {
  const h = createHash('sha256');
  buffer ??= Buffer.allocUnsafe(CHUNK);
  const fd = openSync(file, 'r');
  try {
    for (;;) {
      const n = readSync(fd, buffer, 0, CHUNK, null);
      if (n === 0) break;
      h.update(buffer.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
  return h.digest('hex');
}

/**
 * Checksums by snapshot and selector list. A committed snapshot never
 * changes, so an entry stays true until the snapshot is gone; the least
 * recently used beyond `maxEntries` are forgotten.
 */
export class ChecksumCache {
  private readonly entries = new Map<string, string>();

  constructor(private readonly maxEntries = 4096) {}

  async get(snapshotId: string, selectors: readonly PathSelector[], compute: () => Promise<string>): Promise<string> {
    const key = `${snapshotId}\0${JSON.stringify(selectors.map((s) => [s.path, s.wildcard, s.followSymlink]))}`;
    const hit = this.entries.get(key);
    if (hit !== undefined) {
      this.entries.delete(key);
      this.entries.set(key, hit);
      return hit;
    }
    const value = await compute();
    this.entries.set(key, value);
    while (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value as string);
    return value;
  }
}
