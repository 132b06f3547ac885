import { createHash } from 'node:crypto';
import type { Logger } from '@kiln/common';
import { decompressStream, type LayerCompression } from './decompress.js';
import { extractTar } from './extract-tar.js';

export interface ApplyLayerOptions {
  signal?: AbortSignal;
  logger?: Logger;
}

export interface ApplyLayerResult {
  /** "sha256:..." of the uncompressed tar: the layer's diff id, for the caller to check. */
  diffId: string;
  compression: LayerCompression;
  /** Uncompressed bytes. */
  tarBytes: number;
  entries: number;
  /** Device nodes and xattrs this host did not allow (each logged). */
  skipped: number;
}

/**
 * Applies an OCI image layer (tar, gzip or zstd, told apart by their first
 * bytes) onto `root`, the path of an active snapshot the caller owns: the
 * writable overlay mount or plain directory `prepare` returned, never an
 * upper dir. Whiteouts (`.wh.NAME`, `.wh..wh..opq`) delete from what lower
 * layers left, so on overlay the kernel turns them into overlay whiteouts;
 * every other entry is written as `extractTar` does (paths never leave
 * `root`, hostile names and links included).
 *
 * Errors: the tar reader's TarFormatError, filesystem errors with the entry
 * named, a zstd failure with its stderr; `signal` aborts between entries.
 * On error the snapshot is half-written: remove it.
 */
export async function applyLayer(root: string, stream: AsyncIterable<Uint8Array>, opts: ApplyLayerOptions = {}): Promise<ApplyLayerResult> {
  const { compression, stream: tar } = await decompressStream(stream);
  const hash = createHash('sha256');
  const it = tar[Symbol.asyncIterator]();
  let tarBytes = 0;
  async function* hashed(): AsyncGenerator<Uint8Array> {
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      hash.update(r.value);
      tarBytes += r.value.byteLength;
      yield r.value;
    }
  }
  try {
    const res = await extractTar(root, hashed(), { signal: opts.signal, logger: opts.logger, whiteouts: true });
    // The diff id covers the whole stream, including what follows the end-of-archive blocks.
    for (;;) {
      const r = await it.next();
      if (r.done) break;
      hash.update(r.value);
      tarBytes += r.value.byteLength;
    }
    return { diffId: `sha256:${hash.digest('hex')}`, compression, tarBytes, entries: res.entries, skipped: res.skipped };
  } catch (err) {
    await it.return?.();
    throw err;
  }
}
