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
  const seen = new Set<string>();
  let changed = 0;
  let contentBytes = 0;
  yield* out.push(ContextDiffEncoder.magic());
  for await (const walked of entries) {
    if (opts.signal?.aborted) throw new CanceledError('fetch canceled');
    const e = contextEntryOf(walked);
    if (!e) continue;
    seen.add(e.path);
    if (!contextEntryChanged(e, base.get(e.path))) continue;
    changed++;
    yield* out.push(ContextDiffEncoder.entry(e));
    // Nothing to read for an empty file (a socket the walk sends as one cannot be opened).
    if (e.type !== 'file' || e.size === 0) continue;
    contentBytes += e.size;
    // Synchronous reads: thousands of small files, each promise-based call a thread-pool round trip.
    const fd = openSync(join(root, e.path), 'r');
    try {
      let left = e.size;
      while (left > 0) {
        if (opts.signal?.aborted) throw new CanceledError('fetch canceled');
        const buf = new Uint8Array(Math.min(chunkBytes, left));
        const n = readSync(fd, buf, 0, buf.length, null);
        if (n === 0) {
          yield* out.push(new Uint8Array(left));
          break;
        }
        left -= n;
        yield* out.push(buf.subarray(0, n));
      }
    } finally {
      closeSync(fd);
    }
  }
  let deleted = 0;
  const deletedDirs = new Set<string>();
  /** Whether a directory above `path` is already deleted (a lookup per ancestor, not a scan per deleted directory). */
  const underDeleted = (path: string): boolean => {
    for (let i = path.lastIndexOf('/'); i > 0; i = path.lastIndexOf('/', i - 1)) if (deletedDirs.has(path.slice(0, i))) return true;
    return false;
  };
  for (const path of [...base.keys()].sort()) {
    if (seen.has(path)) continue;
    if (underDeleted(path)) continue;
    deleted++;
    if (base.get(path)!.type === 'dir') deletedDirs.add(path);
    yield* out.push(ContextDiffEncoder.deletion(path));
  }
  yield* out.push(ContextDiffEncoder.end(changed + deleted));
  yield* out.flush();
  opts.onDone?.({ changed, deleted, contentBytes });
}
