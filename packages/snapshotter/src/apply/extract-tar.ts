import { execFileSync } from 'node:child_process';
import { linkSync, lutimesSync, mkdirSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { readTarEntries, writeNewFile, type Logger, type TarHeader } from '@kiln/common';
import { cleanRootPath, resolveInRoot } from '../safe-path.js';
import { applyAttrs, errnoError, lstatOrUndefined } from './fs-helpers.js';
import { mkdirAllInRoot } from '../in-root.js';

export interface ExtractOptions {
  /** Called with the running count of tar bytes read. */
  onBytes?: (total: number) => void;
  signal?: AbortSignal;
  logger?: Logger;
  /**
   * Apply the tar as an OCI image layer: `.wh.NAME` entries delete NAME from
   * what lower layers left in the directory, and `.wh..wh..opq` empties its
   * directory of everything not written by this layer (an opaque
   * directory). Whiteout entries themselves are never written. Deletes are
   * real deletes: on an overlay mount the kernel records them as overlay
   * whiteouts and opaque dirs in the upper dir.
   */
  whiteouts?: boolean;
  /** Owner given to every entry instead of the tar's (ADD --chown of a local archive). */
  owner?: { uid: number; gid: number };
}

export interface ExtractResult {
  /** Tar bytes read. */
  bytes: number;
  entries: number;
  /** Entries skipped because this process may not create them (device nodes without CAP_MKNOD, xattrs it may not set). */
  skipped: number;
}

/**
 * Unpacks a tar stream into the directory `root` (an active snapshot the
 * caller owns), as `tar -x --no-overwrite-dir` run by root inside a chroot
 * would:
 *
 * - every entry name is cleaned and resolved with resolveInRoot, so `..`,
 *   absolute names and symlinks planted by earlier entries (`l -> /`, then
 *   `l/etc/passwd`) all stay under `root`;
 * - the final component is never followed: an existing entry there is
 *   replaced (a directory onto a directory merges);
 * - files, directories, symlinks, hardlinks (to entries already in `root`),
 *   fifos and device nodes keep mode, uid/gid and mtime; pax
 *   `SCHILY.xattr.*` records are set (user.*, trusted.*, security.*); a
 *   device node or xattr this process may not create is skipped with a
 *   warning.
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
  const state: ExtractState = { root, dirTimes: [], logger: opts.logger, skipped: 0 };
  // Host paths written by this tar (whiteout mode): an opaque marker keeps them.
  const written = opts.whiteouts ? new Set<string>() : undefined;
  for await (const entry of readTarEntries(counted())) {
    opts.signal?.throwIfAborted();
    entries++;
    if (written && (await applyWhiteout(root, entry.header, written))) {
      await drain(entry.body);
      continue;
    }
    const header = opts.owner ? { ...entry.header, uid: opts.owner.uid, gid: opts.owner.gid } : entry.header;
    const target = await writeEntry(state, header, entry.body);
    if (written && target !== undefined) markWritten(root, target, written);
  }
  // Directory mtimes last: writing their children changes them.
  for (const { p, mtimeMs } of state.dirTimes.reverse()) {
    const t = mtimeMs / 1000;
    lutimesSync(p, t, t);
  }
  return { bytes, entries, skipped: state.skipped };
}

interface ExtractState {
  root: string;
  dirTimes: { p: string; mtimeMs: number }[];
  logger: Logger | undefined;
  skipped: number;
}

async function writeEntry(state: ExtractState, h: TarHeader, body: AsyncIterable<Buffer>): Promise<string | undefined> {
  const { root } = state;
  const rel = cleanRootPath(h.name);
  const attrs = { mode: h.mode, uid: h.uid, gid: h.gid };
  const mtimeMs = Math.floor(h.mtime) * 1000;
  if (rel === '/') {
    await drain(body);
    if (h.type === 'directory') {
      applyAttrs(root, attrs, false);
      setXattrs(state, root, h);
      state.dirTimes.push({ p: root, mtimeMs });
    }
    return undefined;
  }
  const parent = mkdirAllInRoot(root, path.posix.dirname(rel));
  const target = path.join(parent, path.posix.basename(rel));
  const existing = lstatOrUndefined(target);

  switch (h.type) {
    case 'directory': {
      await drain(body);
      if (existing && !existing.isDirectory()) rmSync(target, { force: true });
      if (!existing || !existing.isDirectory()) mkdirSync(target);
      applyAttrs(target, attrs, false);
      setXattrs(state, target, h);
      state.dirTimes.push({ p: target, mtimeMs });
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
      const st = lstatOrUndefined(src);
      if (!st) throw errnoError('ENOENT', `hardlink target ${h.linkname} of ${h.name} does not exist`);
      if (st.isDirectory()) throw errnoError('EPERM', `hardlink ${h.name} points at directory ${h.linkname}`);
      if (existing) rmSync(target, { recursive: true, force: true });
      linkSync(src, target);
      return target; // a hardlink shares the target's attributes
    }
    case 'fifo':
    case 'character-device':
    case 'block-device': {
      await drain(body);
      if (h.type === 'character-device' && h.devmajor === 0 && h.devminor === 0) {
        // An overlay whiteout smuggled into a tar: never let it hide lower content.
        state.logger?.warn({ entry: h.name }, 'skipping a 0/0 character device in a tar');
        state.skipped++;
        return undefined;
      }
      if (existing) rmSync(target, { recursive: true, force: true });
      if (!makeNode(target, h)) {
        state.logger?.warn({ entry: h.name, type: h.type }, 'skipping a device node: not permitted here');
        state.skipped++;
        return undefined;
      }
      break;
    }
    default: {
      await drain(body);
      state.logger?.warn({ entry: h.name, type: h.type }, 'skipping tar entry of unsupported type');
      state.skipped++;
      return undefined;
    }
  }
  applyAttrs(target, { ...attrs, mtimeMs }, h.type === 'symlink');
  setXattrs(state, target, h);
  return target;
}

/** mknod through the CLI (Node has no mknod); false when the kernel says no (no CAP_MKNOD, a user namespace). */
function makeNode(target: string, h: TarHeader): boolean {
  const args = h.type === 'fifo' ? [target, 'p'] : [target, h.type === 'block-device' ? 'b' : 'c', String(h.devmajor), String(h.devminor)];
  try {
    execFileSync('mknod', ['-m', '0600', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    return true;
  } catch (err) {
    const stderr = String((err as { stderr?: Buffer }).stderr ?? '');
    if (/not permitted|permission denied/i.test(stderr)) return false;
    throw errnoError('EIO', `failed to create device node ${h.name}: ${stderr.trim() || (err as Error).message}`);
  }
}

/**
 * Sets the entry's pax xattrs on `target` (never following a symlink) with
 * setfattr, one call per entry that has any. A name the kernel refuses
 * (e.g. trusted.* without CAP_SYS_ADMIN, or xattrs unsupported by the
 * filesystem) is skipped with a warning; a layer still applies.
 */
function setXattrs(state: ExtractState, target: string, h: TarHeader): void {
  if (!h.xattrs) return;
  for (const [name, value] of Object.entries(h.xattrs)) {
    if (!/^(user|trusted|security)\.[^\s]+$/.test(name) || name.startsWith('trusted.overlay.')) {
      state.logger?.warn({ entry: h.name, xattr: name }, 'skipping an xattr outside user/trusted/security (or an overlay one)');
      state.skipped++;
      continue;
    }
    try {
      execFileSync('setfattr', ['-h', '-n', name, '-v', `0s${value.toString('base64')}`, '--', target], { stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (err) {
      const stderr = String((err as { stderr?: Buffer }).stderr ?? '').trim();
      state.logger?.warn({ entry: h.name, xattr: name, reason: stderr || (err as Error).message }, 'skipping an xattr this host refuses');
      state.skipped++;
    }
  }
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
  const st = lstatOrUndefined(dir);
  if (base === OPAQUE_MARKER) {
    if (!st) {
      // The layer makes a new opaque directory: nothing below to hide.
      const made = mkdirAllInRoot(root, dirRel);
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
