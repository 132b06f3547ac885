import { linkSync, lutimesSync, mkdirSync, rmSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { cleanRootPath, resolveInRoot } from '@kiln/snapshotter';
import { readTarEntries, writeNewFile, type Logger, type TarHeader } from '@kiln/common';
import { applyAttrs, errnoError, lstatOrUndefined, mkdirAllInRoot } from './fs-util.js';

export interface ExtractOptions {
  /** Called with the running count of tar bytes read. */
  onBytes?: (total: number) => void;
  signal?: AbortSignal;
  logger?: Logger;
}

export interface ExtractResult {
  /** Tar bytes read. */
  bytes: number;
  entries: number;
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
  for await (const entry of readTarEntries(counted())) {
    opts.signal?.throwIfAborted();
    entries++;
    await writeEntry(root, entry.header, entry.body, dirTimes, opts.logger);
  }
  for (const { p, mtimeMs } of dirTimes.reverse()) {
    const t = mtimeMs / 1000;
    lutimesSync(p, t, t);
  }
  return { bytes, entries };
}

async function writeEntry(
  root: string,
  h: TarHeader,
  body: AsyncIterable<Buffer>,
  dirTimes: { p: string; mtimeMs: number }[],
  logger: Logger | undefined,
): Promise<void> {
  const rel = cleanRootPath(h.name);
  const attrs = { mode: h.mode, uid: h.uid, gid: h.gid };
  const mtimeMs = Math.floor(h.mtime) * 1000;
  if (rel === '/') {
    await drain(body);
    if (h.type === 'directory') {
      await applyAttrs(root, attrs, false);
      dirTimes.push({ p: root, mtimeMs });
    }
    return;
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
      return;
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
      if (src === target) return;
      const st = await lstatOrUndefined(src);
      if (!st) throw errnoError('ENOENT', `hardlink target ${h.linkname} of ${h.name} does not exist`);
      if (st.isDirectory()) throw errnoError('EPERM', `hardlink ${h.name} points at directory ${h.linkname}`);
      if (existing) rmSync(target, { recursive: true, force: true });
      linkSync(src, target);
      return; // a hardlink shares the target's attributes
    }
    default: {
      await drain(body);
      logger?.warn({ entry: h.name, type: h.type }, 'skipping tar entry of unsupported type');
      return;
    }
  }
  await applyAttrs(target, { ...attrs, mtimeMs }, h.type === 'symlink');
}

async function drain(body: AsyncIterable<Buffer>): Promise<void> {
  for await (const _ of body) {
    // discard
  }
}
