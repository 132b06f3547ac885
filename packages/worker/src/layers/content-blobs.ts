import { randomBytes } from 'node:crypto';
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { Client } from '@connectrpc/connect';
import type { content } from '@kiln/api';
import { createChannel, KilnError, type Logger } from '@kiln/common';

/** The content-store client the worker writes layer blobs with. */
export type ContentClient = Client<typeof content.ContentService>;

type WriteMessage = MessageInitShape<typeof content.WriteRequestSchema>;

/** Label containerd puts on a compressed layer blob: the digest of its uncompressed tar. */
export const UNCOMPRESSED_LABEL = 'containerd.io/uncompressed';

/**
 * Adds `digest` to `lease` (when set) and tells whether the store has the
 * blob. Leasing first means a blob seen here cannot be collected before the
 * caller is done with it.
 */
export async function leaseIfPresent(store: ContentClient, digest: string, lease: string, signal?: AbortSignal): Promise<boolean> {
  if (lease) await store.addLeaseResource({ lease, digest }, { signal });
  try {
    await store.info({ digest }, { signal });
    return true;
  } catch (err) {
    if (err instanceof KilnError && err.code === 'not_found') return false;
    throw err;
  }
}

export interface BlobWrite {
  /** Ingest ref: names the write for resumption and in the store's status. */
  ref: string;
  /** Expected digest; absent: the store reports what it received. */
  digest?: string;
  size?: number;
  lease: string;
  labels?: Record<string, string>;
}

/** Writes a blob from a stream; the store verifies digest and size when given, and answers with both. */
export async function writeBlob(store: ContentClient, w: BlobWrite, data: AsyncIterable<Uint8Array>, signal?: AbortSignal): Promise<{ digest: string; size: number }> {
  async function* messages(): AsyncGenerator<WriteMessage> {
    yield {
      msg: {
        case: 'header',
        value: { ref: w.ref, expectedDigest: w.digest ?? '', expectedSize: w.size === undefined ? undefined : BigInt(w.size), lease: w.lease, labels: w.labels ?? {} },
      },
    };
    for await (const chunk of data) yield { msg: { case: 'data', value: chunk } };
  }
  const res = await store.write(messages(), { signal });
  return { digest: res.digest, size: Number(res.size) };
}

/** Streams a blob from the store. */
export async function* readBlob(store: ContentClient, digest: string, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
  for await (const m of store.read({ digest }, { signal })) yield m.data;
}

/**
 * Passes `src` through while writing the same bytes to the store as blob
 * `digest` (skipped when the store has it). A failing store write is
 * logged and never fails the reader; stopping early abandons the write.
 */
export function teeToStore(
  src: AsyncIterable<Uint8Array>,
  store: ContentClient | undefined,
  blob: { digest: string; size: number },
  logger: Logger,
): AsyncIterable<Uint8Array> {
  if (!store) return src;
  return (async function* () {
    const ch = createChannel<Uint8Array>();
    const written = (async () => {
      if (await leaseIfPresent(store, blob.digest, '')) return ch.abort(new Error('blob already stored'));
      await writeBlob(store, { ref: `pull-${blob.digest.slice(7, 23)}-${randomBytes(4).toString('hex')}`, digest: blob.digest, size: blob.size, lease: '' }, ch);
    })().catch((err: unknown) => {
      ch.abort(err);
      logger.warn({ err, digest: blob.digest }, 'failed to keep a pulled blob in the content store');
    });
    let ended = false;
    try {
      for await (const chunk of src) {
        if (!ch.closed) await ch.push(chunk);
        yield chunk;
      }
      ended = true;
      ch.end();
    } finally {
      if (!ended) ch.abort(new Error('pull stopped'));
    }
    await written;
  })();
}
