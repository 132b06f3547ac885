import { createHash } from 'node:crypto';
import { linkSync, lutimesSync, mkdirSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { cleanRootPath, resolveInRoot } from '@kiln/snapshotter';
import { readTarEntries, writeNewFile, type Logger, type TarHeader } from '@kiln/common';
import { applyAttrs, errnoError, lstatOrUndefined, mkdirAllInRoot } from './fs-util.js';

export interface ExtractOptions {
  /** Called with the running count of tar bytes read. */
  onBytes?: (total: number) => void;
  signal?: AbortSignal;
  logger?: Logger;
  /**
   * Apply the tar as an OCI image layer: `.wh.NAME` entries delete NAME from
   * what lower layers left in the directory, and `.wh..wh..opq` empties its
   * directory of everything not written by this layer (an opaque
   * directory). Whiteout entries themselves are never written.
   */
  whiteouts?: boolean;
  /** Compute `contentDigest` over the entries (for cache keys). */
  contentDigest?: boolean;
}

export interface ExtractResult {
  /** Tar bytes read. */
  bytes: number;
  entries: number;
  /**
   * With `contentDigest`: sha256 over every entry's cleaned path, type, mode,
   * uid/gid, link target and body digest, in path order; mtimes are left
   * out, so touching a file does not change it.
   */
  contentDigest?: string;
}

/**
 * Unpacks a tar stream into the directory `root` (an active snapshot the
 * caller owns), as an unprivileged `tar -x --no-overwrite-dir` run by root
 * inside a chroot would:
 *
 * - every entry name is cleaned and resolved with resolveInRoot, so `..`,
 *   absolute names and symlinks planted by earlier entries (`l -> /`, then
 *   `l/etc/passwd`) all stay under `root`;
 * - the final component is never followed: an existing entry there is
 *   replaced (a directory onto a directory merges);
 * - files, directories, symlinks and hardlinks (to entries already in
 *   `root`) keep mode, uid/gid and mtime; device and fifo entries are
 *   skipped with a log line (they need mknod, left for the layer applier).
 */
export async function extractTar(root: string, chunks: AsyncIterable<Uint8Array>, opts: ExtractOptions = {}): Promise<ExtractResult> {
  let bytes = 0;
  let entries = 0;
  async function* counted(): AsyncGenerator<Uint8Array> {
    for await (const chunk of chunks) {
      bytes += chunk.byteLength;
      opts.onBytes?.(bytes);
      yield chunk;
    }
  }
  // Directory mtimes are set last: writing their children changes them.
  const dirTimes: { p: string; mtimeMs: number }[] = [];
  // Host paths written by this tar (whiteout mode): an opaque marker keeps them.
  const written = opts.whiteouts ? new Set<string>() : undefined;
  const digestLines = opts.contentDigest ? new Map<string, string>() : undefined;
  for await (const raw of readTarEntries(counted())) {
    opts.signal?.throwIfAborted();
    entries++;
    const entry = digestLines ? { header: raw.header, body: hashedBody(raw.header, raw.body, digestLines) } : raw;
    if (written && (await applyWhiteout(root, entry.header, written))) {
      await drain(entry.body);
      continue;
    }
    const target = await writeEntry(root, entry.header, entry.body, dirTimes, opts.logger);
    if (written && target !== undefined) markWritten(root, target, written);
  }
  for (const { p, mtimeMs } of dirTimes.reverse()) {
    const t = mtimeMs / 1000;
    lutimesSync(p, t, t);
  }
  if (!digestLines) return { bytes, entries };
  const h = createHash('sha256');
  for (const name of [...digestLines.keys()].sort()) h.update(digestLines.get(name)!);
  return { bytes, entries, contentDigest: `sha256:${h.digest('hex')}` };
}

/** Passes `body` through, recording the entry's digest line (without its mtime) once it has been read. */
async function* hashedBody(h: TarHeader, body: AsyncIterable<Buffer>, lines: Map<string, string>): AsyncGenerator<Buffer> {
  const hash = createHash('sha256');
  for await (const chunk of body) {
    hash.update(chunk);
    yield chunk;
  }
  const name = cleanRootPath(h.name);
  lines.set(name, `${JSON.stringify([name, h.type, h.mode & 0o7777, h.uid, h.gid, h.linkname, hash.digest('hex')])}\n`);
}

async function writeEntry(
  root: string,
  h: TarHeader,
  body: AsyncIterable<Buffer>,
  dirTimes: { p: string; mtimeMs: number }[],
  logger: Logger | undefined,
): Promise<string | undefined> {
  const rel = cleanRootPath(h.name);
  const attrs = { mode: h.mode, uid: h.uid, gid: h.gid };
  const mtimeMs = Math.floor(h.mtime) * 1000;
  if (rel === '/') {
    await drain(body);
    if (h.type === 'directory') {
      await applyAttrs(root, attrs, false);
      dirTimes.push({ p: root, mtimeMs });
    }
    return undefined;
  }
  const parent = await mkdirAllInRoot(root, path.posix.dirname(rel));
  const target = path.join(parent, path.posix.basename(rel));
  const existing = await lstatOrUndefined(target);

  switch (h.type) {
    case 'directory': {
      await drain(body);
      if (existing && !existing.isDirectory()) rmSync(target, { force: true });
      if (!existing || !existing.isDirectory()) mkdirSync(target);
      await applyAttrs(target, attrs, false);
      dirTimes.push({ p: target, mtimeMs });
      return target;
    }
    case 'file':
    case 'contiguous-file': {
      if (existing) rmSync(target, { recursive: true, force: true });
      await writeNewFile(target, body);
      break;
    }
    case 'symlink': {
      await drain(body);
      if (existing) rmSync(target, { recursive: true, force: true });
      symlinkSync(h.linkname, target);
      break;
    }
    case 'link': {
      await drain(body);
      const src = await resolveInRoot(root, cleanRootPath(h.linkname), { followFinalSymlink: false });
      if (src === target) return target;
      const st = await lstatOrUndefined(src);
      if (!st) throw errnoError('ENOENT', `hardlink target ${h.linkname} of ${h.name} does not exist`);
      if (st.isDirectory()) throw errnoError('EPERM', `hardlink ${h.name} points at directory ${h.linkname}`);
      if (existing) rmSync(target, { recursive: true, force: true });
      linkSync(src, target);
      return target; // a hardlink shares the target's attributes
    }
    default: {
      await drain(body);
      logger?.warn({ entry: h.name, type: h.type }, 'skipping tar entry of unsupported type');
      return undefined;
    }
  }
  await applyAttrs(target, { ...attrs, mtimeMs }, h.type === 'symlink');
  return target;
}

/** Records `target` and its ancestors below `root` as written by this layer. */
function markWritten(root: string, target: string, written: Set<string>): void {
  for (let p = target; p !== root && p.startsWith(root + path.sep) && !written.has(p); p = path.dirname(p)) written.add(p);
}

/** Removes what lower layers left below `dir`: every entry this layer did not write. */
function hideLower(dir: string, written: Set<string>): void {
  for (const child of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, child.name);
    if (!written.has(p)) rmSync(p, { recursive: true, force: true });
    else if (child.isDirectory()) hideLower(p, written);
  }
}

const WHITEOUT_PREFIX = '.wh.';
const OPAQUE_MARKER = '.wh..wh..opq';

/**
 * Applies `h` when it is a whiteout entry (and returns true): `.wh.NAME`
 * removes NAME, `.wh..wh..opq` removes every child of its directory not in
 * `written`. The directory is resolved with resolveInRoot (symlinks stay
 * inside `root`) and the removed name is never followed, so a whiteout
 * cannot delete anything outside `root` or `root` itself.
 */
async function applyWhiteout(root: string, h: TarHeader, written: Set<string>): Promise<boolean> {
  const rel = cleanRootPath(h.name);
  const base = path.posix.basename(rel);
  if (!base.startsWith(WHITEOUT_PREFIX)) return false;
  const dirRel = path.posix.dirname(rel);
  const dir = await resolveInRoot(root, dirRel, { followFinalSymlink: true });
  const st = await lstatOrUndefined(dir);
  if (base === OPAQUE_MARKER) {
    if (!st) {
      // The layer makes a new opaque directory: nothing below to hide.
      const made = await mkdirAllInRoot(root, dirRel);
      written.add(made);
      return true;
    }
    if (!st.isDirectory()) throw errnoError('ENOTDIR', `opaque whiteout ${h.name}: ${dirRel} is not a directory`);
    hideLower(dir, written);
    return true;
  }
  const name = base.slice(WHITEOUT_PREFIX.length);
  if (name === '' || name === '.' || name === '..' || name.includes('/')) {
    throw errnoError('EINVAL', `invalid whiteout entry ${h.name}`);
  }
  if (!st || !st.isDirectory()) return true; // nothing there to delete
  const target = path.join(dir, name);
  if (path.dirname(target) !== dir || target === root) throw errnoError('EINVAL', `invalid whiteout entry ${h.name}`);
  rmSync(target, { recursive: true, force: true });
  return true;
}

async function drain(body: AsyncIterable<Buffer>): Promise<void> {
  for await (const _ of body) {
    // discard
  }
}
