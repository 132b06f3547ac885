import type { FileHandle } from 'node:fs/promises';
import type { Client } from '@connectrpc/connect';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import type { content } from '@kiln/api';
import { KilnError, sha256 } from '@kiln/common';

/** A blob as written: its digest and size. */
export interface WrittenBlob {
  digest: string;
  size: number;
}

/**
 * What exporters need of the content store. Blobs are immutable and
 * addressed by digest; a lease keeps what it names from GC until deleted
 * (or until it expires, so a crashed export does not pin blobs forever).
 */
export interface BlobStore {
  /** Writes `data` (verified against its digest) under `lease`, merging `labels` (an empty value removes a label). */
  put(data: Uint8Array, opts: { lease: string; labels?: Record<string, string> }, signal?: AbortSignal): Promise<WrittenBlob>;
  /** Streams a blob; NotFound when absent. */
  read(digest: string, signal?: AbortSignal): AsyncIterable<Uint8Array>;
  /** The blob's file when the content store runs in this process (see `LocalBlobFiles`); absent otherwise. */
  openFile?(digest: string): Promise<FileHandle>;
  /** Reads a whole (small) blob. */
  readAll(digest: string, signal?: AbortSignal): Promise<Buffer>;
  /** A blob's labels; undefined when the store does not have it. */
  labels(digest: string, signal?: AbortSignal): Promise<Record<string, string> | undefined>;
  /** Merges labels onto an existing blob (an empty value removes that label). */
  setLabels(digest: string, labels: Record<string, string>, signal?: AbortSignal): Promise<void>;
  /** Blobs carrying every label filter (`labels.KEY==VALUE`, `labels.KEY`), with their labels. */
  find(filters: readonly string[], signal?: AbortSignal): Promise<{ digest: string; labels: Record<string, string> }[]>;
  /** A new lease that expires after `ttlMs`. */
  createLease(labels: Record<string, string>, ttlMs: number, signal?: AbortSignal): Promise<string>;
  /** Deletes a lease (its blobs become collectable unless something else holds them). */
  deleteLease(id: string, signal?: AbortSignal): Promise<void>;
}

/**
 * Opens a committed blob's file for reading: given by the composition root
 * when the content store runs in the same process (never over the wire).
 */
export type LocalBlobFiles = (digest: string) => Promise<FileHandle>;

/** A BlobStore over the content tier's Connect client (with its files, when `localFiles` is given). */
export function contentBlobStore(client: Client<typeof content.ContentService>, localFiles?: LocalBlobFiles): BlobStore {
  return {
    ...(localFiles ? { openFile: localFiles } : {}),
    async put(data, opts, signal) {
      const digest = sha256(data);
      async function* requests() {
        yield {
          msg: {
            case: 'header' as const,
            value: { ref: `export-${digest}-${process.pid}-${Math.random().toString(36).slice(2)}`, expectedDigest: digest, expectedSize: BigInt(data.length), labels: opts.labels ?? {}, lease: opts.lease },
          },
        };
        yield { msg: { case: 'data' as const, value: data } };
      }
      const res = await client.write(requests(), { signal });
      return { digest: res.digest, size: Number(res.size) };
    },
    async *read(digest, signal) {
      for await (const m of client.read({ digest }, { signal })) yield m.data;
    },
    async readAll(digest, signal) {
      const parts: Uint8Array[] = [];
      for await (const m of client.read({ digest }, { signal })) parts.push(m.data);
      return Buffer.concat(parts);
    },
    async labels(digest, signal) {
      try {
        const res = await client.info({ digest }, { signal });
        return { ...res.info?.labels };
      } catch (err) {
        if (err instanceof KilnError && err.code === 'not_found') return undefined;
        throw err;
      }
    },
    async setLabels(digest, labels, signal) {
      await client.updateLabels({ digest, labels }, { signal });
    },
    async find(filters, signal) {
      const out: { digest: string; labels: Record<string, string> }[] = [];
      for await (const m of client.list({ filters: [...filters] }, { signal })) if (m.info) out.push({ digest: m.info.digest, labels: { ...m.info.labels } });
      return out;
    },
    async createLease(labels, ttlMs, signal) {
      const res = await client.createLease({ labels, expiresAt: timestampFromMs(Date.now() + ttlMs) }, { signal });
      return res.lease!.id;
    },
    async deleteLease(id, signal) {
      await client.deleteLease({ id }, { signal });
    },
  };
}
