import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { create } from '@bufbuild/protobuf';
import { durationFromMs, timestampDate, timestampFromMs } from '@bufbuild/protobuf/wkt';
import { createClient, createRouterTransport, type Client } from '@connectrpc/connect';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { content } from '@kiln/api';
import { fromConnectError, serverErrorInterceptor, sha256, type KilnError } from '@kiln/common';
import type { ContentStore } from '../content-store.js';
import { openLocalContentStore } from '../fs/local-content-store.js';
import { createContentServiceImpl, READ_CHUNK_SIZE } from './content-service.js';

type WriteMsg = content.WriteRequest;

function header(init: {
  ref: string;
  expectedDigest?: string;
  expectedSize?: bigint;
  labels?: Record<string, string>;
  offset?: bigint;
  lease?: string;
}): WriteMsg {
  return create(content.WriteRequestSchema, {
    msg: { case: 'header', value: { ...init } },
  });
}

function data(bytes: Uint8Array | string): WriteMsg {
  return create(content.WriteRequestSchema, {
    msg: { case: 'data', value: typeof bytes === 'string' ? new TextEncoder().encode(bytes) : bytes },
  });
}

async function* stream(...msgs: WriteMsg[]): AsyncGenerator<WriteMsg> {
  for (const m of msgs) {
    await Promise.resolve();
    yield m;
  }
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

async function kilnError(p: Promise<unknown>): Promise<KilnError> {
  try {
    await p;
  } catch (err) {
    return fromConnectError(err);
  }
  throw new Error('expected a rejection');
}

describe('ContentService over Connect', () => {
  let root: string;
  let store: ContentStore;
  let client: Client<typeof content.ContentService>;

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'kiln-cs-rpc-'));
    store = await openLocalContentStore({ root });
    const transport = createRouterTransport(
      (router) => router.service(content.ContentService, createContentServiceImpl(store)),
      { router: { interceptors: [serverErrorInterceptor] } },
    );
    client = createClient(content.ContentService, transport);
  });

  afterEach(async () => {
    await store.close();
    await rm(root, { recursive: true, force: true });
  });

  it('streams a write in and a read out', async () => {
    const blob = randomBytes(2 * READ_CHUNK_SIZE + 300 * 1024);
    const digest = sha256(blob);
    const res = await client.write(
      stream(
        header({ ref: 'layer-1', expectedDigest: digest, expectedSize: BigInt(blob.length), labels: { kind: 'layer' } }),
        data(blob.subarray(0, 100_000)),
        data(blob.subarray(100_000, 600_000)),
        data(blob.subarray(600_000)),
      ),
    );
    expect(res.digest).toBe(digest);
    expect(res.size).toBe(BigInt(blob.length));

    const parts = await collect(client.read({ digest }));
    expect(parts.length).toBeGreaterThan(2);
    expect(parts.every((p) => p.data.byteLength > 0 && p.data.byteLength <= READ_CHUNK_SIZE)).toBe(true);
    let offset = 0n;
    for (const p of parts) {
      expect(p.offset).toBe(offset);
      offset += BigInt(p.data.byteLength);
    }
    expect(Buffer.concat(parts.map((p) => p.data)).equals(blob)).toBe(true);

    const range = await collect(client.read({ digest, offset: 300_000n, size: 10n }));
    expect(range.map((p) => p.offset)).toEqual([300_000n]);
    expect(Buffer.concat(range.map((p) => p.data)).equals(blob.subarray(300_000, 300_010))).toBe(true);
    const tail = await collect(client.read({ digest, offset: BigInt(blob.length - 5), size: 0n }));
    expect(Buffer.concat(tail.map((p) => p.data)).equals(blob.subarray(-5))).toBe(true);

    const { info } = await client.info({ digest });
    expect(info?.digest).toBe(digest);
    expect(info?.size).toBe(BigInt(blob.length));
    expect(info?.labels).toEqual({ kind: 'layer' });
    expect(Math.abs(timestampDate(info!.createdAt!).getTime() - Date.now())).toBeLessThan(60_000);
  });

  it('treats an absent expected_size as unknown and 0 as empty', async () => {
    const res = await client.write(stream(header({ ref: 'u' }), data('abc')));
    expect(res).toMatchObject({ digest: sha256('abc'), size: 3n });
    const err = await kilnError(client.write(stream(header({ ref: 'z', expectedSize: 0n }), data('abc'))));
    expect(err.code).toBe('failed_precondition');
  });

  it('lists, updates labels and deletes', async () => {
    const a = await client.write(stream(header({ ref: 'a', labels: { kind: 'layer' } }), data('a')));
    const b = await client.write(stream(header({ ref: 'b', labels: { kind: 'config' } }), data('b')));

    const layers = await collect(client.list({ filters: ['labels.kind==layer'] }));
    expect(layers.map((r) => r.info?.digest)).toEqual([a.digest]);
    expect((await collect(client.list({}))).map((r) => r.info?.digest).sort()).toEqual([a.digest, b.digest].sort());

    const updated = await client.updateLabels({ digest: b.digest, labels: { kind: '', root: 'yes' } });
    expect(updated.info?.labels).toEqual({ root: 'yes' });

    await client.delete({ digest: a.digest });
    expect((await collect(client.list({}))).map((r) => r.info?.digest)).toEqual([b.digest]);
  });

  it('carries error codes and messages to the client', async () => {
    const missing = sha256('missing');
    const notFound = await kilnError(client.info({ digest: missing }));
    expect(notFound.code).toBe('not_found');
    expect(notFound.message).toContain(missing);
    expect((await kilnError(collect(client.read({ digest: missing })))).code).toBe('not_found');
    expect((await kilnError(client.delete({ digest: missing })))).toMatchObject({ code: 'not_found' });

    const bad = await kilnError(client.info({ digest: 'sha256:bad' }));
    expect(bad.code).toBe('invalid_argument');
    expect(bad.message).toContain('sha256:bad');
    expect((await kilnError(collect(client.list({ filters: ['nonsense'] })))).code).toBe('invalid_argument');
    expect((await kilnError(collect(client.read({ digest: missing, offset: -1n })))).code).toBe('invalid_argument');

    const expected = sha256('expected');
    const mismatch = await kilnError(client.write(stream(header({ ref: 'm', expectedDigest: expected }), data('actual'))));
    expect(mismatch.code).toBe('failed_precondition');
    expect(mismatch.message).toContain(expected);
    expect(mismatch.message).toContain(sha256('actual'));
    expect(await readdir(join(root, 'blobs', 'sha256'))).toEqual([]);
    expect(await readdir(join(root, 'ingest'))).toEqual([]);

    expect((await kilnError(client.write(stream(data('no header'))))).code).toBe('invalid_argument');
    expect((await kilnError(client.write(stream()))).code).toBe('invalid_argument');
    expect((await kilnError(client.write(stream(header({ ref: 'h' }), data('x'), header({ ref: 'h' }))))).code).toBe(
      'invalid_argument',
    );
    expect(await readdir(join(root, 'ingest'))).toEqual([]);
  });

  it('skips the upload when the expected blob exists', async () => {
    const first = await client.write(stream(header({ ref: 'x' }), data('same')));
    const again = await client.write(
      stream(header({ ref: 'y', expectedDigest: first.digest, labels: { more: '1' } }), data('same')),
    );
    expect(again).toMatchObject({ digest: first.digest, size: 4n });
    expect((await client.info({ digest: first.digest })).info?.labels).toEqual({ more: '1' });
  });

  it('aborting a read from the client stops the server stream', async () => {
    const blob = randomBytes(2 * 1024 * 1024);
    const { digest } = await client.write(stream(header({ ref: 'big' }), data(blob)));
    const ac = new AbortController();
    let n = 0;
    const err = await kilnError(
      (async () => {
        for await (const _ of client.read({ digest }, { signal: ac.signal })) {
          if (++n === 1) ac.abort();
        }
      })(),
    );
    expect(err.code).toBe('canceled');
    expect(n).toBe(1);
  });

  it('reports an interrupted write and resumes it by ref', async () => {
    const blob = randomBytes(1024 * 1024);
    const digest = sha256(blob);
    async function* cut(): AsyncGenerator<WriteMsg> {
      yield header({ ref: 'up', expectedDigest: digest, expectedSize: BigInt(blob.length) });
      yield data(blob.subarray(0, 400_000));
      await new Promise((r) => setTimeout(r, 20));
      throw new Error('client went away');
    }
    await expect(client.write(cut())).rejects.toThrow();
    for (let i = 0; i < 200; i++) {
      const st = (await client.listStatuses({})).statuses[0];
      if (st && !st.active) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    const { status } = await client.status({ ref: 'up' });
    expect(status).toMatchObject({ ref: 'up', offset: 400_000n, expectedDigest: digest, expectedSize: BigInt(blob.length), active: false });
    expect(timestampDate(status!.updatedAt!).getTime()).toBeGreaterThanOrEqual(timestampDate(status!.startedAt!).getTime());

    const res = await client.write(stream(header({ ref: 'up', offset: status!.offset }), data(blob.subarray(400_000))));
    expect(res).toMatchObject({ digest, size: BigInt(blob.length) });
    expect((await client.listStatuses({})).statuses).toEqual([]);
    expect((await kilnError(client.status({ ref: 'up' }))).code).toBe('not_found');
    expect((await kilnError(client.abort({ ref: 'up' }))).code).toBe('not_found');
    const info = (await client.info({ digest })).info!;
    expect(timestampDate(info.lastUsedAt!).getTime()).toBeGreaterThan(0);
  });

  it('manages leases and runs GC', async () => {
    const { lease } = await client.createLease({ id: 'l1', labels: { owner: 'test' } });
    expect(lease).toMatchObject({ id: 'l1', labels: { owner: 'test' } });
    expect(lease?.expiresAt).toBeUndefined();
    const picked = (await client.createLease({ expiresAt: timestampFromMs(Date.now() - 1000) })).lease!;
    expect(picked.id).not.toBe('');
    expect((await kilnError(client.createLease({ id: 'l1' }))).code).toBe('already_exists');

    const kept = await client.write(stream(header({ ref: 'k', lease: 'l1' }), data('kept')));
    const gone = await client.write(stream(header({ ref: 'g' }), data('gone')));
    const planned = sha256('planned');
    await client.addLeaseResource({ lease: 'l1', digest: planned });
    expect((await client.listLeaseResources({ lease: 'l1' })).digests).toEqual([kept.digest, planned].sort());
    await client.deleteLeaseResource({ lease: 'l1', digest: planned });
    expect((await client.listLeases({})).leases.map((l) => l.id).sort()).toEqual(['l1', picked.id].sort());

    const dry = await client.garbageCollect({ dryRun: true });
    expect(dry).toMatchObject({ removed: [gone.digest], bytesFreed: 4n, leasesExpired: [picked.id] });
    expect((await client.info({ digest: gone.digest })).info?.size).toBe(4n);
    const res = await client.garbageCollect({});
    expect(res).toMatchObject({ removed: [gone.digest], bytesFreed: 4n, leasesExpired: [picked.id] });
    expect((await kilnError(client.info({ digest: gone.digest }))).code).toBe('not_found');

    await client.deleteLease({ id: 'l1' });
    expect((await client.garbageCollect({ keepDuration: durationFromMs(60_000) })).removed).toEqual([]);
    expect((await client.garbageCollect({ keepBytes: 0n })).removed).toEqual([kept.digest]);
    expect((await kilnError(client.deleteLease({ id: 'l1' }))).code).toBe('not_found');
    expect((await kilnError(client.garbageCollect({ keepBytes: -1n }))).code).toBe('invalid_argument');
  });
});
