import { randomBytes } from 'node:crypto';
import { closeSync, lstatSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { KilnError } from '@kiln/common';
import { outputTempPath, replaceableByRename } from './extract.js';

/**
 * The CLI's side of a "local write" (`-o type=oci|docker|tar,dest=FILE`):
 * it creates dest's temp file itself (same directory, O_EXCL, the user's
 * own owner and umask) holding a random token, and offers path + token to
 * the exporter in its attrs. A daemon that finds the token there shares
 * this filesystem and writes the output into the file directly; the client
 * then checks the size and renames the temp file over dest. A daemon that
 * does not (another host or mount namespace) streams the bytes as before.
 * KILN_LOCAL_WRITE=0 turns the offer off.
 */

/** Exporter attrs of the offer (read by @kiln/exporters' local-write.ts). */
export const LOCAL_WRITE_PATH_ATTR = 'local-write.path';
export const LOCAL_WRITE_TOKEN_ATTR = 'local-write.token';
const TOKEN_BYTES = 32;

export interface LocalWriteOffer {
  /** The temp file, next to dest. */
  tempPath: string;
  /** Exporter attrs to add. */
  attrs: Record<string, string>;
}

/** Creates the temp file for `dest` and writes the token; undefined when it cannot (the output is then streamed). */
export function offerLocalWrite(dest: string): LocalWriteOffer | undefined {
  const token = randomBytes(TOKEN_BYTES);
  const tempPath = outputTempPath(dest);
  try {
    mkdirSync(dirname(dest), { recursive: true });
    const fd = openSync(tempPath, 'wx', 0o666);
    try {
      writeSync(fd, token);
    } finally {
      closeSync(fd);
    }
  } catch {
    rmSync(tempPath, { force: true });
    return undefined;
  }
  return { tempPath, attrs: { [LOCAL_WRITE_PATH_ATTR]: tempPath, [LOCAL_WRITE_TOKEN_ATTR]: token.toString('hex') } };
}

/** Whether the environment allows the offer (KILN_LOCAL_WRITE=0 turns it off). */
export function localWriteEnabled(env: Readonly<Record<string, string | undefined>>): boolean {
  return env.KILN_LOCAL_WRITE !== '0';
}

/**
 * Finishes a local write the exporter reported: the temp file must be a
 * regular file of `bytes` bytes; it is then renamed over `dest` (atomic).
 */
export function finishLocalWrite(tempPath: string, dest: string, bytes: number): void {
  const st = lstatSync(tempPath, { throwIfNoEntry: false });
  if (!st?.isFile()) {
    throw new KilnError('internal', `output ${dest}: the daemon reported writing ${basename(tempPath)}, but it is ${st ? 'not a regular file' : 'gone'}`);
  }
  if (st.size !== bytes) {
    throw new KilnError('internal', `output ${dest}: the daemon wrote ${bytes} bytes but ${tempPath} holds ${st.size}`);
  }
  renameSync(tempPath, dest);
}

/** Removes a temp file that was not renamed (stream fallback, failure, cancel). */
export function dropLocalWrite(tempPath: string): void {
  rmSync(tempPath, { force: true });
}

/** Offers a local write for every file output with a path (not stdout), by output id. */
export function offerLocalWrites(
  exports: readonly { output?: { id: string; kind: 'dir' | 'file'; path: string } }[],
  env: Readonly<Record<string, string | undefined>>,
): Map<string, LocalWriteOffer> {
  const offers = new Map<string, LocalWriteOffer>();
  if (!localWriteEnabled(env)) return offers;
  for (const e of exports) {
    // stdout, a device, a FIFO or a symlink is written through, never replaced by a rename.
    if (e.output?.kind !== 'file' || e.output.path === '-' || !replaceableByRename(e.output.path)) continue;
    const offer = offerLocalWrite(e.output.path);
    if (offer) offers.set(e.output.id, offer);
  }
  return offers;
}
