import { createHash } from 'node:crypto';
import { KilnError, NotFoundError, readTarEntries } from '@kiln/common';
import {
  LAYOUT_DOC_MAX,
  layoutBlobPath,
  parseLayoutRef,
  resolveLayoutImage,
  type Descriptor,
  type LayoutReader,
} from '@kiln/registry';
import type { SessionFiles } from '../worker.js';
import type { ImageOrigin } from './image-source.js';

/**
 * `oci-layout://STORE[:TAG][@DIGEST]`: an image in the OCI layout the
 * client shares as session directory STORE. Each file (index.json, a
 * blob) is one FetchFiles call whose include pattern is its exact path
 * (digests are checked first, so the path never leaves the layout); blobs
 * are hashed as they stream and fail on a digest or size mismatch.
 */
export function layoutOrigin(sessions: SessionFiles, sessionId: string, ref: string): ImageOrigin {
  const parsed = parseLayoutRef(ref);
  const name = `oci-layout://${ref}`;

  /** The bytes of one regular file of the layout; NotFoundError when it is absent (or not a regular file). */
  async function* fetchFile(path: string, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
    const ac = new AbortController();
    const onAbort = () => ac.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const stream = sessions.fetchFiles({ sessionId, dirName: parsed.path, includePatterns: [path] }, { signal: ac.signal });
      const chunks = (async function* () {
        for await (const m of stream) if (m.tarChunk.byteLength > 0) yield m.tarChunk;
      })();
      for await (const entry of readTarEntries(chunks)) {
        if (entry.header.name !== path) continue;
        if (entry.header.type !== 'file') break;
        yield* entry.body;
        return;
      }
      throw new NotFoundError(`${name}: ${path} not found in the layout`, { path });
    } finally {
      ac.abort(); // ends the session stream when the reader stops early
      signal?.removeEventListener('abort', onAbort);
    }
  }

  async function readSmall(path: string, signal?: AbortSignal): Promise<Uint8Array | undefined> {
    const parts: Uint8Array[] = [];
    let size = 0;
    try {
      for await (const chunk of fetchFile(path, signal)) {
        size += chunk.byteLength;
        if (size > LAYOUT_DOC_MAX) throw new KilnError('failed_precondition', `${name}: ${path} is bigger than ${LAYOUT_DOC_MAX} bytes`, { path });
        parts.push(chunk);
      }
    } catch (err) {
      if (err instanceof NotFoundError) return undefined;
      throw err;
    }
    return Buffer.concat(parts);
  }

  const reader: LayoutReader = {
    readIndex: (signal) => readSmall('index.json', signal),
    readBlob: (digest, signal) => readSmall(layoutBlobPath(digest), signal),
  };

  return {
    name,
    resolve: async (platform, signal) => (await resolveLayoutImage(reader, parsed, platform, name, signal)).manifest,
    fetch: (desc, signal) => verified(fetchFile(layoutBlobPath(desc.digest), signal), desc, name),
  };
}

/** Passes `src` through, then throws when its bytes do not match the descriptor's digest and size. */
async function* verified(src: AsyncIterable<Uint8Array>, desc: Descriptor, name: string): AsyncGenerator<Uint8Array> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of src) {
    hash.update(chunk);
    size += chunk.byteLength;
    yield chunk;
  }
  const got = `sha256:${hash.digest('hex')}`;
  if (got !== desc.digest) throw new KilnError('failed_precondition', `${name}: blob ${desc.digest} does not match its digest (got ${got})`, { digest: desc.digest });
  if (size !== desc.size) throw new KilnError('failed_precondition', `${name}: blob ${desc.digest} is ${size} bytes, the descriptor says ${desc.size}`, { digest: desc.digest });
}
