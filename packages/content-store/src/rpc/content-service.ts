import type { ServiceImpl } from '@connectrpc/connect';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { durationMs, timestampFromMs, timestampMs } from '@bufbuild/protobuf/wkt';
import { content } from '@kiln/api';
import { InvalidArgumentError } from '@kiln/common';
import type { BlobInfo, ContentStore, IngestStatus, Lease } from '../content-store.js';

/**
 * Largest `data` in one ReadResponse. Big messages keep the per-message
 * cost (encode, envelope, HTTP/2 frames) small when exports stream layers.
 */
export const READ_CHUNK_SIZE = 2 ** 20;

/**
 * The ContentService over any ContentStore: maps messages and delegates,
 * passing the call's abort signal to streaming calls. Errors are KilnErrors;
 * register the service on a router with `serverErrorInterceptor` from
 * @kiln/common (as `serveRoutes`/`createInMemoryTransport` do) so their codes
 * and details reach the client.
 *
 * Wire conventions: `ReadRequest.size` 0 reads to the end;
 * an absent `WriteHeader.expected_size` means unknown (0 expects an empty
 * blob); an empty `expected_digest` means unchecked; `WriteHeader.offset`
 * resumes an interrupted write (see `ContentStore.write`); an empty `lease`
 * means none; an empty label value in `UpdateLabels` (or a write header)
 * removes that label; an empty `CreateLeaseRequest.id` lets the store pick.
 */
export function createContentServiceImpl(store: ContentStore): ServiceImpl<typeof content.ContentService> {
  return {
    async info(req) {
      return { info: toProtoInfo(await store.info(req.digest)) };
    },

    async *read(req, ctx) {
      const offset = toSafeNumber(req.offset, 'offset');
      const size = req.size === 0n ? undefined : toSafeNumber(req.size, 'size');
      let pos = offset;
      for await (const chunk of store.read(req.digest, { offset, size, signal: ctx.signal })) {
        for (let i = 0; i < chunk.byteLength; i += READ_CHUNK_SIZE) {
          const data = chunk.subarray(i, i + READ_CHUNK_SIZE);
          yield { data, offset: BigInt(pos) };
          pos += data.byteLength;
        }
      }
    },

    async write(requests, ctx) {
      const it = requests[Symbol.asyncIterator]();
      const first = await it.next();
      if (first.done || first.value.msg.case !== 'header') {
        throw new InvalidArgumentError('the first message of a write must be its header', 'header');
      }
      const header = first.value.msg.value;
      const result = await store.write(
        {
          ref: header.ref,
          expectedDigest: header.expectedDigest === '' ? undefined : header.expectedDigest,
          expectedSize: header.expectedSize === undefined ? undefined : toSafeNumber(header.expectedSize, 'expected_size'),
          labels: header.labels,
          offset: toSafeNumber(header.offset, 'offset'),
          lease: header.lease === '' ? undefined : header.lease,
        },
        dataChunks(it),
        { signal: ctx.signal },
      );
      return { digest: result.digest, size: BigInt(result.size) };
    },

    async delete(req) {
      await store.delete(req.digest);
      return {};
    },

    async *list(req, ctx) {
      for await (const info of store.list(req.filters, { signal: ctx.signal })) {
        yield { info: toProtoInfo(info) };
      }
    },

    async updateLabels(req) {
      return { info: toProtoInfo(await store.updateLabels(req.digest, req.labels)) };
    },

    async status(req) {
      return { status: toProtoStatus(await store.status(req.ref)) };
    },

    async listStatuses() {
      return { statuses: (await store.listStatuses()).map(toProtoStatus) };
    },

    async abort(req) {
      await store.abort(req.ref);
      return {};
    },

    async createLease(req) {
      const lease = await store.createLease(req.id === '' ? undefined : req.id, {
        expiresAt: req.expiresAt ? new Date(timestampMs(req.expiresAt)) : undefined,
        labels: req.labels,
      });
      return { lease: toProtoLease(lease) };
    },

    async deleteLease(req) {
      await store.deleteLease(req.id);
      return {};
    },

    async listLeases() {
      return { leases: (await store.listLeases()).map(toProtoLease) };
    },

    async addLeaseResource(req) {
      await store.addLeaseResource(req.lease, req.digest);
      return {};
    },

    async deleteLeaseResource(req) {
      await store.deleteLeaseResource(req.lease, req.digest);
      return {};
    },

    async listLeaseResources(req) {
      return { digests: await store.listLeaseResources(req.lease) };
    },

    async garbageCollect(req, ctx) {
      const keepDurationMs = req.keepDuration ? durationMs(req.keepDuration) : undefined;
      if (keepDurationMs !== undefined && (!Number.isSafeInteger(keepDurationMs) || keepDurationMs < 0)) {
        throw new InvalidArgumentError(`keep_duration must be a non-negative whole number of milliseconds`, 'keep_duration');
      }
      const result = await store.gc({
        dryRun: req.dryRun,
        keepBytes: req.keepBytes === undefined ? undefined : toSafeNumber(req.keepBytes, 'keep_bytes'),
        keepDurationMs,
        signal: ctx.signal,
      });
      return {
        removed: result.removed,
        bytesFreed: BigInt(result.bytesFreed),
        ingestsRemoved: result.ingestsRemoved,
        leasesExpired: result.leasesExpired,
      };
    },
  };
}

/** The data messages after the header; anything else is a protocol error. */
async function* dataChunks(it: AsyncIterator<content.WriteRequest>): AsyncGenerator<Uint8Array> {
  for (;;) {
    const next = await it.next();
    if (next.done) return;
    const msg = next.value.msg;
    if (msg.case === 'data') yield msg.value;
    else if (msg.case === 'header') throw new InvalidArgumentError('a write carries one header, in its first message', 'header');
    else throw new InvalidArgumentError('a write message carries neither header nor data', 'msg');
  }
}

function toProtoInfo(info: BlobInfo): MessageInitShape<typeof content.BlobInfoSchema> {
  return {
    digest: info.digest,
    size: BigInt(info.size),
    createdAt: timestampFromMs(info.createdAt.getTime()),
    lastUsedAt: timestampFromMs(info.lastUsedAt.getTime()),
    labels: { ...info.labels },
  };
}

function toProtoStatus(s: IngestStatus): MessageInitShape<typeof content.IngestStatusSchema> {
  return {
    ref: s.ref,
    offset: BigInt(s.offset),
    expectedDigest: s.expectedDigest ?? '',
    expectedSize: s.expectedSize === undefined ? undefined : BigInt(s.expectedSize),
    startedAt: timestampFromMs(s.startedAt.getTime()),
    updatedAt: timestampFromMs(s.updatedAt.getTime()),
    active: s.active,
  };
}

function toProtoLease(l: Lease): MessageInitShape<typeof content.LeaseSchema> {
  return {
    id: l.id,
    createdAt: timestampFromMs(l.createdAt.getTime()),
    expiresAt: l.expiresAt ? timestampFromMs(l.expiresAt.getTime()) : undefined,
    labels: { ...l.labels },
  };
}

function toSafeNumber(value: bigint, field: string): number {
  if (value < 0n || value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new InvalidArgumentError(`${field} must be between 0 and ${Number.MAX_SAFE_INTEGER}, got ${value}`, field);
  }
  return Number(value);
}
