import { randomBytes } from 'node:crypto';
import { constants, createWriteStream, chmodSync, openSync, lchownSync, linkSync, lstatSync, lutimesSync, mkdirSync, renameSync, rmSync, symlinkSync, unlinkSync, utimesSync } from 'node:fs';
import { once } from 'node:events';
import { dirname, join, posix } from 'node:path';
import type { Writable } from 'node:stream';
import { InvalidArgumentError, KilnError, readTarEntries, writeNewFile } from '@kiln/common';

export interface ExtractOptions {
  /** Also apply the archive's uid/gid (only meaningful as root). Default: when running as root. */
  chown?: boolean;
}

/**
 * Unpacks a tar stream into `dest` (created when missing). Files, dirs,
 * symlinks and hard links are created with their modes and mtimes;
 * directory modes and times are applied last so read-only directories
 * still receive their children. An entry whose path is absolute or leaves
 * `dest`, or that would be written through a symlink, is rejected and the
 * extraction fails (entries already written stay). Device nodes and FIFOs
 * are skipped. Returns the number of entries written.
 */
export async function extractTar(chunks: AsyncIterable<Uint8Array>, dest: string, opts: ExtractOptions = {}): Promise<number> {
  const chown = opts.chown ?? process.getuid?.() === 0;
  mkdirSync(dest, { recursive: true });
  const knownDirs = new Set<string>(['']);
  const dirs: { path: string; mode: number; mtime: number }[] = [];
  let count = 0;

  const ensureParents = async (rel: string) => {
    const parts = rel.split('/');
    parts.pop();
    let cur = '';
    for (const part of parts) {
      cur = cur === '' ? part : `${cur}/${part}`;
      if (knownDirs.has(cur)) continue;
      const st = lstatSync(join(dest, cur), { throwIfNoEntry: false });
      if (st === undefined) mkdirSync(join(dest, cur), { mode: 0o755 });
      else if (st.isSymbolicLink()) throw escapeError(rel, 'it would be written through a symlink');
      else if (!st.isDirectory()) throw new KilnError('failed_precondition', `failed to extract "${rel}": "${cur}" is not a directory`);
      knownDirs.add(cur);
    }
  };

  const clear = async (abs: string, rel: string, keepDir: boolean) => {
    const st = lstatSync(abs, { throwIfNoEntry: false });
    if (st === undefined) return;
    if (st.isDirectory()) {
      if (keepDir) return;
      throw new KilnError('failed_precondition', `failed to extract "${rel}": a directory is in the way`);
    }
    unlinkSync(abs);
  };

  for await (const { header, body } of readTarEntries(chunks)) {
    const rel = safeRelPath(header.name);
    if (rel === '') {
      if (header.type === 'directory') dirs.push({ path: dest, mode: header.mode, mtime: header.mtime });
      continue;
    }
    await ensureParents(rel);
    const abs = join(dest, rel);
    switch (header.type) {
      case 'directory': {
        const st = lstatSync(abs, { throwIfNoEntry: false });
        if (st?.isSymbolicLink() || (st && !st.isDirectory())) unlinkSync(abs);
        if (!st?.isDirectory()) mkdirSync(abs, { mode: 0o755 });
        knownDirs.add(rel);
        dirs.push({ path: abs, mode: header.mode, mtime: header.mtime });
        break;
      }
      case 'file':
      case 'contiguous-file': {
        await clear(abs, rel, false);
        await writeNewFile(abs, body);
        chmodSync(abs, header.mode);
        utimesSync(abs, header.mtime, header.mtime);
        break;
      }
      case 'symlink': {
        await clear(abs, rel, false);
        symlinkSync(header.linkname, abs);
        ignoreErrors(() => lutimesSync(abs, header.mtime, header.mtime));
        break;
      }
      case 'link': {
        const target = safeRelPath(header.linkname);
        if (target === '') throw escapeError(header.linkname, 'a hard link must name a file');
        await ensureParents(target);
        await clear(abs, rel, false);
        linkSync(join(dest, target), abs);
        break;
      }
      default:
        continue;
    }
    if (chown) ignoreErrors(() => lchownSync(abs, header.uid, header.gid));
    count++;
  }
  // Deepest first, so a parent's mtime is set after its children changed it.
  dirs.sort((a, b) => b.path.length - a.path.length);
  for (const d of dirs) {
    chmodSync(d.path, d.mode);
    utimesSync(d.path, d.mtime, d.mtime);
  }
  return count;
}

/**
 * Normalizes an archive path to one relative to the destination; throws for
 * absolute paths and paths that leave it (`../evil`, `a/../../evil`).
 */
export function safeRelPath(name: string): string {
  if (name.startsWith('/')) throw escapeError(name, 'absolute paths are not allowed');
  const norm = posix.normalize(name);
  if (norm === '..' || norm.startsWith('../')) throw escapeError(name, 'it leaves the destination');
  return norm === '.' || norm === './' ? '' : norm.replace(/\/$/, '');
}

function escapeError(name: string, why: string): KilnError {
  return new InvalidArgumentError(`refusing to extract "${name}": ${why}`);
}

/**
 * Writes a byte stream to a file (created with its parent directories;
 * replaced when it exists) or, for `-`, to `stdout`. Resolves once every
 * byte is flushed; returns the byte count.
 */
/** Bytes a file output may queue before waiting for the disk (exports arrive in 1 MiB chunks). */
const FILE_OUTPUT_BUFFER = 8 * 2 ** 20;

export async function writeFileOutput(chunks: AsyncIterable<Uint8Array>, dest: string, stdout: Writable, temp?: string): Promise<number> {
  if (dest === '-') return writeAll(chunks, stdout, false);
  mkdirSync(dirname(dest), { recursive: true });
  // A deep buffer: the next chunk is taken off the session while the last is written.
  if (!replaceableByRename(dest)) return writeAll(chunks, createWriteStream(dest, { highWaterMark: FILE_OUTPUT_BUFFER }));
  // Into a temp file beside dest, renamed over it at the end: a failed or canceled
  // export never leaves a partial file where the previous good one was. `temp` is
  // one the caller made already (a local-write offer the daemon did not take).
  const partial = temp ?? outputTempPath(dest);
  const fd = openSync(partial, temp ? constants.O_WRONLY | constants.O_TRUNC | constants.O_NOFOLLOW : 'wx', 0o666);
  const ws = createWriteStream(partial, { fd, highWaterMark: FILE_OUTPUT_BUFFER });
  try {
    const bytes = await writeAll(chunks, ws);
    renameSync(partial, dest);
    return bytes;
  } catch (err) {
    ws.destroy();
    if (!ws.closed) await once(ws, 'close').catch(() => undefined);
    rmSync(partial, { force: true });
    throw err;
  }
}

/** A fresh temp file name in dest's directory (dot-prefixed, random). */
export function outputTempPath(dest: string): string {
  return join(dirname(dest), `.kiln-out-${randomBytes(8).toString('hex')}.tmp`);
}

/**
 * Whether a file output may be written to a temp file and renamed over
 * `dest`: a regular file or nothing. dest=/dev/stdout, a FIFO, a device or a
 * symlink is written through instead.
 */
export function replaceableByRename(path: string): boolean {
  try {
    return lstatSync(path).isFile();
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT';
  }
}

async function writeAll(chunks: AsyncIterable<Uint8Array>, ws: Writable, end = true): Promise<number> {
  let bytes = 0;
  let onError: (err: Error) => void = () => undefined;
  const failed = new Promise<never>((_, reject) => {
    onError = reject;
  });
  failed.catch(() => undefined);
  ws.once('error', onError);
  try {
    for await (const chunk of chunks) {
      bytes += chunk.length;
      if (!ws.write(chunk)) await Promise.race([once(ws, 'drain'), failed]);
    }
    if (end) {
      ws.end();
      await Promise.race([once(ws, 'close'), failed]);
    } else {
      // Resolves when everything queued so far is handed to the OS.
      await Promise.race([new Promise<void>((resolve, reject) => ws.write('', (err) => (err ? reject(err) : resolve()))), failed]);
    }
  } catch (err) {
    if (end) ws.destroy();
    throw err;
  } finally {
    ws.off('error', onError);
  }
  return bytes;
}

/** Best effort: some filesystems refuse symlink times or foreign owners. */
function ignoreErrors(fn: () => void): void {
  try {
    fn();
  } catch {
    // not fatal for an output directory
  }
}
