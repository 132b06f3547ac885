import { closeSync, openSync, readSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { CanceledError } from '../errors/errors.js';
import { ContextDiffEncoder, contextEntryChanged, type ContextEntry } from './context-diff.js';
import { Chunker } from './chunker.js';

/** An entry of the client's directory walk (lstat'ed, symlinks not followed). */
export interface DiffSourceEntry {
  /** Slash-separated path relative to the root. */
  path: string;
  stat: Stats;
  /** Symlink target as stored. */
  linkname?: string;
}

export interface PackContextDiffOptions {
  /** Largest chunk yielded. Default 64 KiB. */
  chunkBytes?: number;
  signal?: AbortSignal;
  /** Called once at the end with what was sent. */
  onDone?: (stats: { changed: number; deleted: number; contentBytes: number }) => void;
}

/** The ContextEntry the client reports for one walked entry; undefined for types never sent. */
export function contextEntryOf(e: DiffSourceEntry): ContextEntry | undefined {
  const st = e.stat;
  const type = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : undefined;
  if (!type) return undefined;
  return {
    path: e.path,
    type,
    mode: st.mode & 0o7777,
    uid: st.uid,
    gid: st.gid,
    size: type === 'file' ? st.size : 0,
    mtimeMs: st.mtimeMs,
    linkname: type === 'symlink' ? (e.linkname ?? '') : '',
  };
}

/**
 * Streams the diff of the walked `entries` (parents before children)
 * against `base` (see context-diff.ts): changed and new entries, files
 * with their bytes, then deletions of the base paths the walk did not
 * produce (only the topmost of a deleted subtree). A file that shrinks
 * while read is zero-padded and one that grows is cut at its walked size,
 * so the stream stays well formed.
 */
export async function* packContextDiff(
  root: string,
  entries: Iterable<DiffSourceEntry> | AsyncIterable<DiffSourceEntry>,
  base: ReadonlyMap<string, ContextEntry>,
  opts: PackContextDiffOptions = {},
): AsyncGenerator<Uint8Array> {
  const chunkBytes = opts.chunkBytes ?? 64 * 1024;
  const out = new Chunker(chunkBytes);
  /** Chunks filled by `out.append`, yielded after each entry (no generator per piece). */
  const full: Uint8Array[] = [];
  const seen = new Set<string>();
  let changed = 0;
  let contentBytes = 0;
  out.append(ContextDiffEncoder.magic(), full);
  // A synchronous walk is read without an await per entry (for-await would add one).
  const syncIt = Symbol.iterator in entries ? entries[Symbol.iterator]() : undefined;
  const asyncIt = syncIt ? undefined : (entries as AsyncIterable<DiffSourceEntry>)[Symbol.asyncIterator]();
  try {
    for (;;) {
      const next = syncIt ? syncIt.next() : await asyncIt!.next();
      if (next.done) break;
      const walked = next.value;
      if (opts.signal?.aborted) throw new CanceledError('fetch canceled');
      const e = contextEntryOf(walked);
      if (!e) continue;
      const was = base.get(e.path);
      // Only paths of the base are remembered: the rest of the base is what was deleted.
      if (was) seen.add(e.path);
      if (!contextEntryChanged(e, was)) continue;
      changed++;
      out.append(ContextDiffEncoder.entryLine(e), full);
      // Nothing to read for an empty file (a socket the walk sends as one cannot be opened).
      if (e.type === 'file' && e.size > 0) {
        contentBytes += e.size;
        if (e.size <= chunkBytes) readInto(out, full, join(root, e.path), e.size, chunkBytes, opts.signal);
        else yield* readLarge(out, full, join(root, e.path), e.size, chunkBytes, opts.signal);
      }
      if (full.length > 0) {
        yield* full;
        full.length = 0;
      }
    }
  } finally {
    // Ends the walk when the stream stops early (as for-of would).
    syncIt?.return?.(undefined);
    await asyncIt?.return?.(undefined);
  }
  let deleted = 0;
  const deletedDirs = new Set<string>();
  /** Whether a directory above `path` is already deleted (a lookup per ancestor, not a scan per deleted directory). */
  const underDeleted = (path: string): boolean => {
    for (let i = path.lastIndexOf('/'); i > 0; i = path.lastIndexOf('/', i - 1)) if (deletedDirs.has(path.slice(0, i))) return true;
    return false;
  };
  // Sorted only when something is gone (a base that is all seen has nothing to delete).
  const gone = seen.size === base.size ? [] : [...base.keys()].filter((p) => !seen.has(p)).sort();
  for (const path of gone) {
    if (underDeleted(path)) continue;
    deleted++;
    if (base.get(path)!.type === 'dir') deletedDirs.add(path);
    out.append(ContextDiffEncoder.deletion(path), full);
  }
  out.append(ContextDiffEncoder.end(changed + deleted), full);
  yield* full;
  yield* out.flush();
  opts.onDone?.({ changed, deleted, contentBytes });
}

/** readInto for a file larger than a chunk: yields the chunks as they fill, so a big file is never held whole. */
function* readLarge(out: Chunker, full: Uint8Array[], abs: string, size: number, chunkBytes: number, signal: AbortSignal | undefined): Generator<Uint8Array> {
  const fd = openSync(abs, 'r');
  try {
    let left = size;
    while (left > 0) {
      left = readStep(fd, out, full, left, chunkBytes, signal);
      yield* full;
      full.length = 0;
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * Appends `size` bytes of file `abs` to `out`: synchronous reads
 * (thousands of small files, each promise-based call a thread-pool round
 * trip). A file that shrank is zero-padded, one that grew is cut at `size`.
 */
function readInto(out: Chunker, full: Uint8Array[], abs: string, size: number, chunkBytes: number, signal: AbortSignal | undefined): void {
  const fd = openSync(abs, 'r');
  try {
    let left = size;
    while (left > 0) left = readStep(fd, out, full, left, chunkBytes, signal);
  } finally {
    closeSync(fd);
  }
}

/** One read (at most a chunk) of `fd` into `out`; returns the bytes still to come, 0 when the file ended early (the rest zero-padded). */
function readStep(fd: number, out: Chunker, full: Uint8Array[], left: number, chunkBytes: number, signal: AbortSignal | undefined): number {
  if (signal?.aborted) throw new CanceledError('fetch canceled');
  const buf = new Uint8Array(Math.min(chunkBytes, left));
  const n = readSync(fd, buf, 0, buf.length, null);
  if (n === 0) {
    out.append(new Uint8Array(left), full);
    return 0;
  }
  out.append(buf.subarray(0, n), full);
  return left - n;
}
