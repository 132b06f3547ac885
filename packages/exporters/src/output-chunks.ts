import { KilnError } from '@kiln/common';
import type { BlobSpan, OutputChunk } from './exporter.js';

export function isBlobSpan(chunk: OutputChunk): chunk is BlobSpan {
  return !(chunk instanceof Uint8Array);
}

/** The output as bytes only: each blob read through the store (a stream through the session has no file to copy). */
export async function* outputBytes(data: AsyncIterable<OutputChunk>): AsyncGenerator<Uint8Array> {
  for await (const chunk of data) {
    if (isBlobSpan(chunk)) yield* chunk.read();
    else yield chunk;
  }
}

/** The store holds other bytes than the descriptor says (`found` past `size`: more). */
export function blobSizeMismatch(digest: string, found: number, size: number): KilnError {
  return new KilnError('failed_precondition', `failed to export blob ${digest}: the content store has ${found > size ? 'more' : found} bytes, the layer descriptor says ${size}`, { digest });
}
