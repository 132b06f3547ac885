import { closeSync, constants, openSync, writeSync } from 'node:fs';

/**
 * Creates `abs` (O_EXCL|O_NOFOLLOW: never writes through an entry already
 * there, such as a planted symlink) with `mode` and writes `body` to it.
 * Synchronous calls on purpose: extracting thousands of small files, a
 * thread-pool round trip per call dominated the time. `beforeClose` runs
 * after the last write, on the open fd.
 */
export async function writeNewFile(abs: string, body: AsyncIterable<Uint8Array>, mode = 0o600, beforeClose?: (fd: number) => void): Promise<void> {
  const fd = openSync(abs, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
  try {
    for await (const chunk of body) {
      let off = 0;
      while (off < chunk.length) off += writeSync(fd, chunk, off, chunk.length - off);
    }
    // Owner, mode, times set on the open file: no path lookups per file.
    beforeClose?.(fd);
  } finally {
    closeSync(fd);
  }
}
