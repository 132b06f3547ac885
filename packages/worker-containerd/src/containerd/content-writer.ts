import type { MessageInitShape } from '@bufbuild/protobuf';
import { containerdContent } from '@kiln/api';
import { createChannel, KilnError } from '@kiln/common';
import { hasCode, type ContainerdClient } from './client.js';

type WriteRequest = MessageInitShape<typeof containerdContent.WriteContentRequestSchema>;

/** The largest data field sent in one Write request (containerd takes up to 16 MiB messages). */
const MAX_CHUNK = 1 << 20;

export interface ContentWrite {
  /** Ingest name: one writer at a time per ref (containerd refuses a second with `unavailable`). */
  ref: string;
  digest: string;
  size: number;
  /** Labels of the committed blob, e.g. `containerd.io/gc.ref.content.l.0`. */
  labels?: Record<string, string>;
  /** The blob joins this lease (and so does the ingest while it is written). */
  lease?: string;
  signal?: AbortSignal;
}

/**
 * Writes one blob into containerd's content store through `Content.Write`:
 * WRITE requests from offset 0 (which restarts a stale ingest of the same
 * ref), then COMMIT with the expected size, digest and labels; containerd
 * checks both. A blob the store already has is not written again: its
 * labels are merged in instead. Returns what happened.
 */
export async function writeContent(client: ContainerdClient, data: AsyncIterable<Uint8Array>, w: ContentWrite): Promise<'written' | 'exists'> {
  if (await hasContent(client, w.digest, w.signal)) {
    await addContentLabels(client, w.digest, w.labels ?? {}, w.signal);
    if (w.lease) await client.leases.addResource({ id: w.lease, resource: { id: w.digest, type: 'content' } });
    return 'exists';
  }
  async function* requests(): AsyncGenerator<WriteRequest> {
    let offset = 0;
    for await (const chunk of data) {
      for (let at = 0; at < chunk.byteLength; at += MAX_CHUNK) {
        const part = chunk.subarray(at, at + MAX_CHUNK);
        yield { action: containerdContent.WriteAction.WRITE, ref: w.ref, total: BigInt(w.size), expected: w.digest, offset: BigInt(offset), data: part };
        offset += part.byteLength;
      }
    }
    yield { action: containerdContent.WriteAction.COMMIT, ref: w.ref, total: BigInt(w.size), expected: w.digest, offset: BigInt(offset), labels: w.labels ?? {} };
  }
  try {
    for await (const _ of client.content.write(requests(), { lease: w.lease, signal: w.signal })) {
      // one answer per request: the ingest's offset so far, then the committed digest
    }
    return 'written';
  } catch (err) {
    // A concurrent writer of the same blob committed first.
    if (hasCode(err, 'already_exists')) {
      await addContentLabels(client, w.digest, w.labels ?? {}, w.signal);
      return 'exists';
    }
    await client.content.abort({ ref: w.ref }).catch(() => undefined);
    throw err;
  }
}

export async function hasContent(client: ContainerdClient, digest: string, signal?: AbortSignal): Promise<boolean> {
  try {
    await client.content.info({ digest }, { signal });
    return true;
  } catch (err) {
    if (hasCode(err, 'not_found')) return false;
    throw err;
  }
}

/** Sets `labels` on a blob, leaving its other labels as they are. */
export async function addContentLabels(client: ContainerdClient, digest: string, labels: Record<string, string>, signal?: AbortSignal): Promise<void> {
  const keys = Object.keys(labels);
  if (keys.length === 0) return;
  await client.content.update({ info: { digest, labels }, updateMask: { paths: keys.map((k) => `labels.${k}`) } }, { signal });
}

/**
 * A writer fed chunk by chunk (a tee of a stream consumed elsewhere): `push`
 * each chunk, then `finish()` to commit, or `abort()` to drop the ingest.
 * Pushes are paced by the write so a slow containerd holds the reader back
 * instead of buffering the blob in memory.
 */
export interface ContentTee {
  push(chunk: Uint8Array): Promise<void>;
  /** Commits; rejects with the write's error. */
  finish(): Promise<'written' | 'exists'>;
  abort(reason?: unknown): void;
}

export function teeContent(client: ContainerdClient, w: ContentWrite): ContentTee {
  const chunks = createChannel<Uint8Array>();
  const done = writeContent(client, chunks, w);
  // Once the write has settled (committed, found the blob present, or failed), pushes must not wait for a reader.
  done.then(
    () => chunks.abort(new KilnError('canceled', 'write settled')),
    () => chunks.abort(new KilnError('canceled', 'write failed')),
  );
  return {
    push: (chunk) => chunks.push(chunk),
    finish: () => {
      chunks.end();
      return done;
    },
    abort: (reason) => chunks.abort(reason ?? new KilnError('canceled', `write of ${w.digest} abandoned`)),
  };
}
