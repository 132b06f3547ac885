import { constants, promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { basename } from 'node:path';
import { timingSafeEqual } from 'node:crypto';
import { copyFileRange, KilnError } from '@kiln/common';
import type { OutputChunk } from './exporter.js';
import { blobSizeMismatch, isBlobSpan } from './output-chunks.js';

/**
 * "Local write" of a file output: when the CLI shares the daemon's
 * filesystem it creates the destination's temp file itself, writes a random
 * token into it and names both in the exporter attrs below. Finding that
 * token in that file proves the daemon sees the same file, so the exporter
 * writes the output there directly instead of streaming it through the
 * session. Anything else (no such file, a symlink, a mismatch) means
 * "stream as before".
 */
export const LOCAL_WRITE_PATH_ATTR = 'local-write.path';
export const LOCAL_WRITE_TOKEN_ATTR = 'local-write.token';
/** The CLI's temp file name: only such files are ever opened (never an arbitrary file that happens to hold the token bytes). */
export const LOCAL_WRITE_NAME = /^\.kiln-out-[0-9a-f]{16}\.tmp$/;
/** The token: 32 random bytes, hex in the attr. */
export const LOCAL_WRITE_TOKEN_BYTES = 32;

export interface LocalWriteTarget {
  path: string;
  token: Buffer;
}

/** The local-write offer in an exporter's attrs, if any (a malformed one is ignored: stream). */
export function localWriteTarget(attrs: Record<string, string>): LocalWriteTarget | undefined {
  const path = attrs[LOCAL_WRITE_PATH_ATTR];
  const hex = attrs[LOCAL_WRITE_TOKEN_ATTR];
  if (!path || !hex || !path.startsWith('/') || !LOCAL_WRITE_NAME.test(basename(path))) return undefined;
  if (!/^[0-9a-f]+$/.test(hex) || hex.length !== LOCAL_WRITE_TOKEN_BYTES * 2) return undefined;
  return { path, token: Buffer.from(hex, 'hex') };
}

/**
 * Opens the client's temp file if it is the one the client made: a regular
 * file, not a symlink (O_NOFOLLOW), one link, exactly the token's size and
 * content. Resolves undefined (with the reason) when not; the caller streams.
 */
export async function openLocalWrite(target: LocalWriteTarget): Promise<{ fh: FileHandle } | { reason: string }> {
  let fh: FileHandle;
  try {
    // O_NONBLOCK: a FIFO planted at the path must not hang the open.
    fh = await fsp.open(target.path, constants.O_RDWR | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    return { reason: `cannot open ${target.path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}` };
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) return fail(fh, `${target.path} is not a regular file`);
    if (st.nlink !== 1) return fail(fh, `${target.path} has ${st.nlink} links`);
    if (st.size !== target.token.length) return fail(fh, `${target.path} does not hold the token (size ${st.size})`);
    const buf = Buffer.alloc(target.token.length);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    if (bytesRead !== buf.length || !timingSafeEqual(buf, target.token)) return fail(fh, `${target.path} does not hold the token`);
    return { fh };
  } catch (err) {
    return fail(fh, `cannot check ${target.path}: ${String(err)}`);
  }
}

async function fail(fh: FileHandle, reason: string): Promise<{ reason: string }> {
  await fh.close().catch(() => undefined);
  return { reason };
}

/** Writes gathered blocks: the content store's 1 MiB messages go out as one pwritev per 8 MiB, never copied together. */
const WRITE_BLOCK = 8 * 1024 * 1024;

export interface LocalWriteTiming {
  writeMs: number;
  /** Bytes of blobs copied from the content store's files in the kernel (the rest was written from buffers). */
  fileCopiedBytes: number;
}

/**
 * Truncates the checked temp file, writes `data` into it and closes it;
 * resolves with the size. No fsync: the file is the user's output, written
 * as the streamed path (the CLI) and buildx's own client write theirs; the
 * CLI renames it into place only after the build succeeded, so no reader
 * sees a partial file while the machine runs. (An fsync of a 200 MiB
 * tarball was 120-170 ms of the export here.) A blob that can be opened as a file (the
 * content store in this process) is copied in the kernel (`copyFileRange`):
 * its bytes never pass through the daemon's heap.
 */
export async function writeLocal(fh: FileHandle, path: string, data: AsyncIterable<OutputChunk>, timing?: LocalWriteTiming, signal?: AbortSignal): Promise<number> {
  let size = 0;
  let fileCopiedBytes = 0;
  const t0 = performance.now();
  try {
    await fh.truncate(0);
    let parts: Uint8Array[] = [];
    let pending = 0;
    const flush = async () => {
      if (pending === 0) return;
      const { bytesWritten } = await fh.writev(parts, size);
      // A short write (rare on a regular file): the rest, one buffer at a time.
      if (bytesWritten < pending) {
        const rest = Buffer.concat(parts, pending).subarray(bytesWritten);
        let off = 0;
        while (off < rest.length) off += (await fh.write(rest, off, rest.length - off, size + bytesWritten + off)).bytesWritten;
      }
      size += pending;
      parts = [];
      pending = 0;
    };
    const add = async (chunk: Uint8Array) => {
      parts.push(chunk);
      pending += chunk.length;
      if (pending >= WRITE_BLOCK) await flush();
    };
    for await (const chunk of data) {
      if (!isBlobSpan(chunk)) {
        await add(chunk);
        continue;
      }
      const file = await chunk.open?.().catch(() => undefined);
      if (!file) {
        for await (const c of chunk.read()) await add(c);
        continue;
      }
      try {
        await flush();
        const { size: found } = await file.stat();
        if (found !== chunk.size) throw blobSizeMismatch(chunk.digest, found, chunk.size);
        const copied = await copyFileRange(file, 0, fh, size, chunk.size, signal);
        if (copied !== chunk.size) throw blobSizeMismatch(chunk.digest, copied, chunk.size);
        size += copied;
        fileCopiedBytes += copied;
      } finally {
        await file.close().catch(() => undefined);
      }
    }
    await flush();
    if (timing) Object.assign(timing, { writeMs: Math.round(performance.now() - t0), fileCopiedBytes });
  } catch (err) {
    if (err instanceof KilnError) throw err;
    throw new KilnError('internal', `writing the output into ${path}: ${String(err)}`);
  } finally {
    await fh.close().catch(() => undefined);
  }
  return size;
}
