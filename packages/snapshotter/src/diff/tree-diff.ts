import { closeSync, constants, lstatSync, openSync, readdirSync, readlinkSync, readSync, type BigIntStats } from 'node:fs';
import path from 'node:path';
import { encodeTarHeader, tarPadding, tarTrailer, type TarHeaderInit } from '@kiln/common';
import type { TreeXattrs } from './xattrs.js';

/** Prefix of an OCI whiteout entry: `.wh.NAME` deletes NAME from the layers below. */
export const WHITEOUT_PREFIX = '.wh.';

export interface TreeDiffOptions {
  /** Clamp entry mtimes (seconds since the epoch) to at most this value. */
  sourceDateEpoch?: number;
  /** Extended attributes of each tree (see `readTreeXattrs`): compared, and the child's written as pax records. Absent: none. */
  parentXattrs?: TreeXattrs;
  childXattrs?: TreeXattrs;
  /**
   * The overlay upper dir of `childDir` over exactly `parentDir`
   * (`Snapshotter.changes`, with index, redirect_dir and metacopy off): only
   * the names it holds are compared, since any other entry of the child is
   * the parent's own, shown through. Deletions still come from comparing
   * both listings of each directory walked, so whiteouts and opaque
   * directories need no reading. Same plan as without it; a diff of a
   * few changed files no longer walks and compares the whole tree.
   */
  changesDir?: string;
  signal?: AbortSignal;
}

/**
 * A layer tar described without its file contents: encoded header bytes and
 * references to the files whose bodies follow them. `layerTarChunks` (or a
 * worker thread, which needs no tree walk) turns it into the tar bytes.
 */
export interface LayerPlan {
  parts: LayerPart[];
  /** Entries in the layer (whiteouts included); 0 for an empty diff. */
  entries: number;
  /** Length of the uncompressed tar. */
  size: number;
}

/** Literal tar bytes, or `size` bytes read from the file at `path` (then padding comes in the next bytes part). */
export type LayerPart = { kind: 'bytes'; data: Buffer } | { kind: 'file'; path: string; size: number };

interface Entry {
  name: string;
  abs: string;
  st: BigIntStats;
}

/**
 * Plans the layer tar that turns `parentDir` (absent: an empty tree) into
 * `childDir`, with a double walk like containerd's differ:
 *
 * - added or modified entries (type, mode, uid/gid, size, mtime in ns,
 *   symlink target, device number or xattrs differ) are written with their
 *   parent directories; a regular file whose size and mtime are equal is
 *   unchanged, unless both mtimes are whole seconds (maybe truncated by an
 *   archive), in which case contents are compared;
 * - a deleted entry becomes one `.wh.NAME` whiteout (a deleted directory's
 *   contents are not listed);
 * - a file with several links is written once, later paths as hardlinks to
 *   it when its first path is in the layer;
 * - entries in sorted path order (a directory before its contents; names by
 *   code unit, whiteouts sorted by their own name), uname/gname empty,
 *   mtimes in whole seconds (clamped to `sourceDateEpoch`), sockets skipped.
 *
 * Same trees, same plan, same bytes. The trees must not change until the
 * plan's bytes are read.
 */
export function planTreeDiff(parentDir: string | undefined, childDir: string, opts: TreeDiffOptions = {}): LayerPlan {
  const parts: LayerPart[] = [];
  let entries = 0;
  let size = 0;
  const pushBytes = (b: Buffer) => {
    const last = parts.at(-1);
    if (last?.kind === 'bytes' && last.data.length < 64 * 1024) last.data = Buffer.concat([last.data, b]);
    else parts.push({ kind: 'bytes', data: b });
    size += b.length;
  };
  const firstPathOfInode = new Map<string, string>();
  /** Unchanged ancestor directories of the current walk position, written once something below them is. */
  const pending: { header: Buffer; written: boolean }[] = [];
  const flushPending = () => {
    for (const p of pending) {
      if (p.written) continue;
      pushBytes(p.header);
      entries++;
      p.written = true;
    }
  };
  const mtimeOf = (st: BigIntStats) => {
    const sec = Number(st.mtimeNs / 1_000_000_000n);
    return opts.sourceDateEpoch !== undefined ? Math.min(sec, opts.sourceDateEpoch) : sec;
  };

  /** Writes `e` (an added or modified non-directory, or a directory header). */
  const writeEntry = (e: Entry) => {
    const { st } = e;
    const base: TarHeaderInit = {
      name: e.name,
      mode: Number(st.mode) & 0o7777,
      uid: Number(st.uid),
      gid: Number(st.gid),
      mtime: mtimeOf(st),
      xattrs: opts.childXattrs?.get(e.name),
    };
    flushPending();
    entries++;
    if (st.isDirectory()) {
      pushBytes(encodeTarHeader({ ...base, type: 'directory' }));
    } else if (st.isSymbolicLink()) {
      pushBytes(encodeTarHeader({ ...base, type: 'symlink', linkname: readlinkSync(e.abs) }));
    } else if (st.isFile()) {
      const inode = `${st.dev}:${st.ino}`;
      const first = st.nlink > 1n ? firstPathOfInode.get(inode) : undefined;
      if (first !== undefined) {
        pushBytes(encodeTarHeader({ ...base, type: 'link', linkname: first }));
        return;
      }
      if (st.nlink > 1n) firstPathOfInode.set(inode, e.name);
      const fileSize = Number(st.size);
      pushBytes(encodeTarHeader({ ...base, type: 'file', size: fileSize }));
      if (fileSize > 0) {
        parts.push({ kind: 'file', path: e.abs, size: fileSize });
        size += fileSize;
        const pad = tarPadding(fileSize);
        if (pad.length > 0) pushBytes(pad);
      }
    } else {
      const h: TarHeaderInit = { ...base, type: st.isFIFO() ? 'fifo' : st.isCharacterDevice() ? 'character-device' : 'block-device' };
      if (!st.isFIFO()) {
        const rdev = st.rdev;
        h.devmajor = Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
        h.devminor = Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
      }
      pushBytes(encodeTarHeader(h));
    }
  };

  const writeWhiteout = (dirRel: string, name: string) => {
    flushPending();
    entries++;
    pushBytes(encodeTarHeader({ name: join(dirRel, WHITEOUT_PREFIX + name), type: 'file', mode: 0o644, mtime: 0 }));
  };

  /** Writes a whole subtree as added (its directory header already written). */
  const writeAdded = (dirAbs: string, dirRel: string) => {
    for (const name of sortedNames(dirAbs)) {
      opts.signal?.throwIfAborted();
      const e = entry(dirAbs, dirRel, name);
      if (e === undefined) continue;
      writeEntry(e);
      if (e.st.isDirectory()) writeAdded(e.abs, e.name);
    }
  };

  /** Walks a directory present in both trees (only the names `changesAbs` holds, when given: see `changesDir`). */
  const walkBoth = (parentAbs: string, childAbs: string, rel: string, changesAbs?: string) => {
    const childNames = sortedNames(childAbs);
    const childSet = new Set(childNames);
    const parentNames = readdirSync(parentAbs);
    const changed = changesAbs === undefined ? undefined : new Set(readdirSync(changesAbs));
    // Merge child names and whiteouts of deleted names in entry-name order.
    const items: { key: string; name: string; deleted: boolean }[] = [];
    for (const name of childNames) if (!changed || changed.has(name)) items.push({ key: name, name, deleted: false });
    for (const name of parentNames) if (!childSet.has(name)) items.push({ key: WHITEOUT_PREFIX + name, name, deleted: true });
    items.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    for (const it of items) {
      opts.signal?.throwIfAborted();
      if (it.deleted) {
        writeWhiteout(rel, it.name);
        continue;
      }
      const c = entry(childAbs, rel, it.name);
      if (c === undefined) continue;
      const pAbs = path.join(parentAbs, it.name);
      const pst = lstatOrUndefined(pAbs);
      if (pst === undefined || !sameType(pst, c.st)) {
        writeEntry(c);
        if (c.st.isDirectory()) writeAdded(c.abs, c.name);
        continue;
      }
      const unchanged = sameMetadata(pst, c.st, pAbs, c.abs) && sameXattrs(opts.parentXattrs?.get(c.name), opts.childXattrs?.get(c.name));
      if (c.st.isDirectory()) {
        if (unchanged) {
          pending.push({ header: dirHeader(c), written: false });
        } else {
          writeEntry(c);
          pending.push({ header: Buffer.alloc(0), written: true });
        }
        walkBoth(pAbs, c.abs, c.name, changesAbs === undefined ? undefined : path.join(changesAbs, it.name));
        pending.pop();
      } else if (!unchanged) {
        writeEntry(c);
      }
    }
  };

  const dirHeader = (e: Entry) =>
    encodeTarHeader({
      name: e.name,
      type: 'directory',
      mode: Number(e.st.mode) & 0o7777,
      uid: Number(e.st.uid),
      gid: Number(e.st.gid),
      mtime: mtimeOf(e.st),
      xattrs: opts.childXattrs?.get(e.name),
    });

  if (parentDir === undefined) writeAdded(childDir, '');
  else walkBoth(parentDir, childDir, '', opts.changesDir);
  if (entries > 0) pushBytes(tarTrailer());
  return { parts, entries, size };
}

/**
 * The tar bytes of a plan, read synchronously in chunks of about 1 MiB (the
 * walk reads many small files; a promise-based call per read costs a
 * thread-pool round trip). Throws when a planned file shrank.
 */
export function* layerTarChunks(plan: LayerPlan, signal?: AbortSignal): Generator<Buffer> {
  const CHUNK = 1 << 20;
  for (const part of plan.parts) {
    signal?.throwIfAborted();
    if (part.kind === 'bytes') {
      yield part.data;
      continue;
    }
    const fd = openSync(part.path, constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      let left = part.size;
      while (left > 0) {
        const buf = Buffer.allocUnsafe(Math.min(CHUNK, left));
        const n = readSync(fd, buf, 0, buf.length, null);
        if (n === 0) throw new Error(`${part.path} shrank while its layer was written`);
        left -= n;
        yield buf.subarray(0, n);
      }
    } finally {
      closeSync(fd);
    }
  }
}

/** The layer tar turning `parentDir` into `childDir` (see `planTreeDiff`); empty (no bytes) when nothing changed. */
export async function* diffTrees(parentDir: string | undefined, childDir: string, opts: TreeDiffOptions = {}): AsyncGenerator<Uint8Array> {
  yield* layerTarChunks(planTreeDiff(parentDir, childDir, opts), opts.signal);
}

function join(dirRel: string, name: string): string {
  return dirRel === '' ? name : `${dirRel}/${name}`;
}

function sortedNames(dirAbs: string): string[] {
  return readdirSync(dirAbs).sort();
}

function lstatOrUndefined(abs: string): BigIntStats | undefined {
  try {
    return lstatSync(abs, { bigint: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** The entry `name` of a directory, or undefined for what a tar cannot hold (sockets). */
function entry(dirAbs: string, dirRel: string, name: string): Entry | undefined {
  const abs = path.join(dirAbs, name);
  const st = lstatSync(abs, { bigint: true });
  if (st.isSocket()) return undefined;
  return { name: join(dirRel, name), abs, st };
}

function sameType(a: BigIntStats, b: BigIntStats): boolean {
  return (a.mode & 0o170000n) === (b.mode & 0o170000n);
}

function sameMetadata(p: BigIntStats, c: BigIntStats, pAbs: string, cAbs: string): boolean {
  if (p.mode !== c.mode || p.uid !== c.uid || p.gid !== c.gid || p.mtimeNs !== c.mtimeNs) return false;
  if (c.isDirectory()) return true;
  if (p.size !== c.size) return false;
  if (c.isSymbolicLink()) return readlinkSync(pAbs) === readlinkSync(cAbs);
  if (c.isCharacterDevice() || c.isBlockDevice()) return p.rdev === c.rdev;
  if (c.isFile() && c.mtimeNs % 1_000_000_000n === 0n && !(p.dev === c.dev && p.ino === c.ino)) return sameContents(pAbs, cAbs, Number(c.size));
  return true;
}

function sameContents(a: string, b: string, size: number): boolean {
  const fa = openSync(a, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const fb = openSync(b, constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      const ba = Buffer.allocUnsafe(Math.min(size, 1 << 20) || 1);
      const bb = Buffer.allocUnsafe(ba.length);
      for (let left = size; left > 0; ) {
        const na = readSync(fa, ba, 0, Math.min(ba.length, left), null);
        const nb = readSync(fb, bb, 0, na, null);
        if (na === 0 || nb !== na || !ba.subarray(0, na).equals(bb.subarray(0, nb))) return false;
        left -= na;
      }
      return true;
    } finally {
      closeSync(fb);
    }
  } finally {
    closeSync(fa);
  }
}

function sameXattrs(a: Readonly<Record<string, Buffer>> | undefined, b: Readonly<Record<string, Buffer>> | undefined): boolean {
  const ka = Object.keys(a ?? {}).sort();
  const kb = Object.keys(b ?? {}).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && a![k]!.equals(b![k]!));
}

/**
 * The paths a `planTreeDiff` with `changesDir` compares with the parent:
 * entries of the changes dir present in both trees with the same type
 * (directories walked as that diff walks them). Their parent xattrs are
 * all the diff needs from `parentDir`.
 */
export function comparedPaths(parentDir: string, childDir: string, changesDir: string): string[] {
  const out: string[] = [];
  const walk = (parentAbs: string, childAbs: string, changesAbs: string, rel: string) => {
    for (const name of sortedNames(changesAbs)) {
      const c = lstatOrUndefined(path.join(childAbs, name));
      if (c === undefined || c.isSocket()) continue;
      const p = lstatOrUndefined(path.join(parentAbs, name));
      if (p === undefined || !sameType(p, c)) continue;
      const r = join(rel, name);
      out.push(r);
      if (c.isDirectory()) walk(path.join(parentAbs, name), path.join(childAbs, name), path.join(changesAbs, name), r);
    }
  };
  walk(parentDir, childDir, changesDir, '');
  return out;
}
