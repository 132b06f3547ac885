import { closeSync, lstatSync, openSync, readdirSync, readlinkSync, readSync, type Stats } from 'node:fs';
import { lstat, readlink } from 'node:fs/promises';
import { join, posix, resolve } from 'node:path';
import { CanceledError, Chunker, cleanRelPath, encodeTarHeader, hasWildcard, matchComponent, tarPadding, tarTrailer, type PatternMatcher, type TarHeader } from '@kiln/common';

/** Largest data chunk read from a file or sent in one message. */
export const CHUNK_BYTES = 64 * 1024;

export interface SelectOptions {
  /** Absolute directory to walk; nothing outside it is read or sent. */
  root: string;
  /** Paths to send: a path matching it or under a matching directory. Empty = all. */
  include: PatternMatcher;
  /**
   * Exclusion sets applied one after the other (e.g. `.dockerignore` and the
   * daemon's exclude patterns): a path excluded by any of them is skipped,
   * and an excluded directory without exceptions beneath is never walked.
   */
  exclude: readonly PatternMatcher[];
  signal?: AbortSignal;
}

export interface SelectedEntry {
  /** Path relative to the root, slash separated. */
  path: string;
  stat: Stats;
  /** Symlink target as stored (not followed). */
  linkname?: string;
}

/**
 * Walks `root` in lexical order and yields the entries to send: matching
 * files and symlinks, matching directories, and the parent directories of
 * anything yielded (each before its children). Symlinks are never followed;
 * a socket is sent as an empty regular file (as BuildKit's transfer does);
 * FIFOs and devices are skipped.
 *
 * Synchronous on purpose: a context walk is thousands of lstat calls, and
 * each promise-based call costs a thread-pool round trip (measured: 2000
 * files took seconds that way, milliseconds this way).
 */
export function* selectFiles(opts: SelectOptions): Generator<SelectedEntry> {
  // Parent directories not sent yet; the first `emitted` of them are sent (a prefix: parents go first).
  const pending: SelectedEntry[] = [];
  let emitted = 0;
  const root = resolve(opts.root);

  function* walk(rel: string, abs: string): Generator<SelectedEntry> {
    const names = readdirSync(abs).sort();
    for (const name of names) {
      if (opts.signal?.aborted) throw new CanceledError('fetch canceled');
      const path = rel === '' ? name : `${rel}/${name}`;
      // String concatenation, not join: a name from readdir has no separator to normalise.
      const full = `${abs}/${name}`;
      const stat = lstatSync(full);
      const included = opts.include.empty || opts.include.matches(path);
      let excluded = false;
      let excludedForGood = false;
      for (const m of opts.exclude) {
        if (!m.matches(path)) continue;
        excluded = true;
        if (stat.isDirectory() && !m.hasExceptionsUnder(path)) excludedForGood = true;
      }
      if (stat.isDirectory()) {
        if (!included && !opts.include.mayMatchUnder(path)) continue;
        if (excludedForGood) continue;
        pending.push({ path, stat });
        if (included && !excluded) {
          while (emitted < pending.length) yield pending[emitted++]!;
        }
        yield* walk(path, full);
        pending.pop();
        if (emitted > pending.length) emitted = pending.length;
        continue;
      }
      if (!included || excluded) continue;
      let entry: SelectedEntry;
      if (stat.isFile()) entry = { path, stat };
      else if (stat.isSymbolicLink()) entry = { path, stat, linkname: readlinkSync(full) };
      else if (stat.isSocket()) entry = { path, stat: asEmptyFile(stat) };
      else continue;
      while (emitted < pending.length) yield pending[emitted++]!;
      yield entry;
    }
  }

  yield* walk('', root);
}

/** The stat of a socket seen as an empty regular file with the socket's mode, owner and times. */
function asEmptyFile(stat: Stats): Stats {
  const file = Object.create(stat) as Stats;
  file.size = 0;
  file.mode = (stat.mode & 0o7777) | 0o100000;
  file.isFile = () => true;
  file.isSocket = () => false;
  return file;
}

/**
 * Resolves `followPaths` as BuildKit does: each path, plus the target of
 * every symlink met along it (recursively, kept inside the root), becomes a
 * literal include pattern. A component with wildcards follows the symlinks
 * it matches in its directory (`COPY l*` where `link1 -> dir`).
 */
export async function followLinks(root: string, paths: readonly string[]): Promise<string[]> {
  const out = new Set<string>();
  const visit = async (p: string, depth: number): Promise<void> => {
    const clean = cleanRelPath(p);
    if (clean === '' || out.has(clean) || depth > 40) return;
    out.add(clean);
    const parts = clean.split('/');
    for (let i = 1; i <= parts.length; i++) {
      const prefix = parts.slice(0, i).join('/');
      if (hasWildcard(parts[i - 1]!)) {
        await visitMatchedLinks(parts.slice(0, i - 1), parts[i - 1]!, parts.slice(i), depth);
        return;
      }
      let st: Stats;
      try {
        st = await lstat(join(root, prefix));
      } catch {
        return;
      }
      if (!st.isSymbolicLink()) continue;
      // The link itself is sent too, so the path resolves on the other side.
      out.add(prefix);
      const target = await readlink(join(root, prefix));
      const resolved = target.startsWith('/') ? target : posix.join(posix.dirname(prefix), target);
      await visit(posix.join(cleanRelPath(resolved), ...parts.slice(i)), depth + 1);
      return;
    }
  };
  /** Follows each symlink in `dir` (root-relative parts) whose name matches `pattern`; other matches are not walked. */
  const visitMatchedLinks = async (dir: string[], pattern: string, rest: string[], depth: number): Promise<void> => {
    let names: string[];
    try {
      names = readdirSync(join(root, ...dir));
    } catch {
      return;
    }
    for (const name of names.sort()) {
      if (!matchComponent(pattern, name)) continue;
      const linkPath = [...dir, name].join('/');
      let st: Stats;
      try {
        st = await lstat(join(root, linkPath));
      } catch {
        continue;
      }
      if (!st.isSymbolicLink()) continue;
      out.add(linkPath);
      const target = await readlink(join(root, linkPath));
      const resolved = target.startsWith('/') ? target : posix.join(dir.join('/'), target);
      await visit(posix.join(cleanRelPath(resolved), ...rest), depth + 1);
    }
  };
  for (const p of paths) await visit(p, 0);
  return [...out];
}

/** Escapes a literal path so it can be used as a pattern. */
export function literalPattern(path: string): string {
  return path.replace(/[\\*?[\]]/g, (c) => `\\${c}`);
}

/**
 * Streams a tar of the selected entries as chunks of at most CHUNK_BYTES.
 * Modes, mtimes (whole seconds), uid/gid and symlink targets are kept. A file
 * that shrinks while read is zero-padded, one that grows is cut at its
 * size when walked, so the archive stays well formed.
 */
export async function* packSelected(root: string, entries: Iterable<SelectedEntry> | AsyncIterable<SelectedEntry>, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
  const chunker = new Chunker(CHUNK_BYTES);
  for await (const e of entries) {
    const header: TarHeader = {
      name: e.path,
      type: e.stat.isDirectory() ? 'directory' : e.stat.isSymbolicLink() ? 'symlink' : 'file',
      mode: e.stat.mode & 0o7777,
      mtime: Math.floor(e.stat.mtimeMs / 1000),
      uid: e.stat.uid,
      gid: e.stat.gid,
      size: e.stat.isFile() ? e.stat.size : 0,
      linkname: e.linkname ?? '',
      uname: '',
      gname: '',
      devmajor: 0,
      devminor: 0,
    };
    yield* chunker.push(encodeTarHeader(header));
    // Nothing to read for an empty file (a socket sent as one cannot be opened).
    if (header.type !== 'file' || header.size === 0) continue;
    // Synchronous reads, for the same reason as selectFiles; a big file still
    // yields between chunks.
    const fd = openSync(join(root, e.path), 'r');
    try {
      let left = header.size;
      while (left > 0) {
        if (signal?.aborted) throw new CanceledError('fetch canceled');
        const buf = new Uint8Array(Math.min(CHUNK_BYTES, left));
        const bytesRead = readSync(fd, buf, 0, buf.length, null);
        if (bytesRead === 0) {
          yield* chunker.push(new Uint8Array(left));
          break;
        }
        left -= bytesRead;
        yield* chunker.push(buf.subarray(0, bytesRead));
      }
    } finally {
      closeSync(fd);
    }
    yield* chunker.push(tarPadding(header.size));
  }
  yield* chunker.push(tarTrailer());
  yield* chunker.flush();
}
