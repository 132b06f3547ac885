import { createHash } from 'node:crypto';
import { content } from '@kiln/api';
import { createInMemoryTransport, createKilnClient, InvalidArgumentError, KilnError, NotFoundError } from '@kiln/common';
import type { ContentClient } from '../layers/content-blobs.js';

export interface MemoryContent {
  /** A ContentService client over an in-memory transport; pass it as the worker's `content`. */
  readonly client: ContentClient;
  /** Stored blobs by digest. */
  readonly blobs: Map<string, { data: Buffer; labels: Record<string, string> }>;
  /** Lease id -> digests added to it. */
  readonly leases: Map<string, Set<string>>;
  /** Number of completed writes. */
  writes: number;
  /** The next this many writes fail after their first data message (a store that breaks mid-write). */
  failWrites: number;
}

/**
 * The parts of ContentService the worker uses (Info, Read, Write,
 * UpdateLabels, Abort, AddLeaseResource, Delete), over memory. Writes verify the expected digest
 * and size like the real store; a write of a blob it has only merges labels.
 * For worker unit tests; the real store is exercised by e2e tests.
 */
export function createMemoryContent(): MemoryContent {
  const blobs = new Map<string, { data: Buffer; labels: Record<string, string> }>();
  const leases = new Map<string, Set<string>>();
  const state: MemoryContent = { client: undefined as unknown as ContentClient, blobs, leases, writes: 0, failWrites: 0 };
  const transport = createInMemoryTransport((router) => {
    router.service(content.ContentService, {
      async info(req) {
        const b = blobs.get(req.digest);
        if (!b) throw new NotFoundError(`blob ${req.digest} not found`);
        return { info: { digest: req.digest, size: BigInt(b.data.length), labels: b.labels } };
      },
      async *read(req) {
        const b = blobs.get(req.digest);
        if (!b) throw new NotFoundError(`blob ${req.digest} not found`);
        for (let i = 0; i < b.data.length; i += 256 * 1024) yield { data: b.data.subarray(i, i + 256 * 1024), offset: BigInt(i) };
      },
      async write(requests) {
        let header: content.WriteHeader | undefined;
        const parts: Buffer[] = [];
        for await (const m of requests) {
          if (m.msg.case === 'header') header = m.msg.value;
          else if (m.msg.case === 'data') {
            if (state.failWrites > 0) {
              state.failWrites--;
              throw new KilnError('unavailable', 'content store broke mid-write');
            }
            parts.push(Buffer.from(m.msg.value));
          }
        }
        if (!header) throw new InvalidArgumentError('the first message of a write must be its header', 'header');
        const data = Buffer.concat(parts);
        const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
        if (header.expectedDigest && header.expectedDigest !== digest) {
          throw new InvalidArgumentError(`unexpected digest ${digest}, want ${header.expectedDigest}`, 'expected_digest');
        }
        if (header.expectedSize !== undefined && BigInt(data.length) !== header.expectedSize) {
          throw new InvalidArgumentError(`unexpected size ${data.length}, want ${header.expectedSize}`, 'expected_size');
        }
        const labels = { ...blobs.get(digest)?.labels, ...header.labels };
        blobs.set(digest, { data, labels });
        if (header.lease) addLease(header.lease, digest);
        state.writes++;
        return { digest, size: BigInt(data.length) };
      },
      async updateLabels(req) {
        const b = blobs.get(req.digest);
        if (!b) throw new NotFoundError(`blob ${req.digest} not found`);
        Object.assign(b.labels, req.labels);
        return { info: { digest: req.digest, size: BigInt(b.data.length), labels: b.labels } };
      },
      async abort() {
        // Writes here are all-or-nothing: an interrupted one left nothing to remove.
        return {};
      },
      async addLeaseResource(req) {
        addLease(req.lease, req.digest);
        return {};
      },
      async delete(req) {
        if (!blobs.delete(req.digest)) throw new NotFoundError(`blob ${req.digest} not found`);
        return {};
      },
    });
  });
  const addLease = (lease: string, digest: string) => {
    let set = leases.get(lease);
    if (!set) leases.set(lease, (set = new Set()));
    set.add(digest);
  };
  (state as { client: ContentClient }).client = createKilnClient(content.ContentService, transport);
  return state;
}
