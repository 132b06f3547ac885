import { content, worker } from '@kiln/api';
import { createInMemoryTransport, createKilnClient, silentLogger, UnavailableError } from '@kiln/common';
import { describe, expect, it } from 'vitest';
import { CACHE_OWNER, CacheStore } from '../cache/cache-store.js';
import { openSolverDatabase } from '../cache/sqlite.js';
import { VertexCache } from './vertex-cache.js';
import type { WorkerHandle } from './workers.js';

/**
 * The cache over fake workers that log their calls and a fake content
 * tier that keeps its leases: a result another worker holds is pulled
 * (GetLayers there, ImportLayers here) when cheaper than its recorded run,
 * else run; a pull that fails runs the step.
 */
function setup(opts: { deadHolder?: boolean } = {}) {
  const calls: string[] = [];
  const leases = new Set<string>();
  const fakeWorker = (id: string, dead = false): WorkerHandle => {
    const down = () => new UnavailableError(`connect ECONNREFUSED (worker ${id})`);
    const transport = createInMemoryTransport((r) =>
      r.service(worker.WorkerService, {
        async refUsage(req) {
          if (dead) throw down();
          return { usage: req.refs.map((ref) => ({ ref, found: true, size: 4096n })) };
        },
        async retain(req) {
          if (dead) throw down();
          calls.push(`${id} retain ${req.refs.join(',')} ${req.owner.replace(/-[0-9a-f]{16}$/, '')}`);
          return { missing: [] };
        },
        async drop(req) {
          calls.push(`${id} drop ${req.refs.join(',')} ${req.owner.replace(/-[0-9a-f]{16}$/, '')}`);
          return {};
        },
        async release(req) {
          calls.push(`${id} release ${req.refs.join(',')}`);
          return {};
        },
        async getLayers(req) {
          if (!leases.has(req.lease)) throw new Error(`GetLayers outside a lease: ${req.lease}`);
          calls.push(`${id} getLayers ${req.ref}`);
          return { layers: [{ digest: `sha256:${'1'.repeat(64)}`, size: 10n, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', diffId: `sha256:${'2'.repeat(64)}`, createdBy: 'RUN sleep 1' }] };
        },
        async importLayers(req) {
          calls.push(`${id} importLayers ${req.layers.map((l) => `${l.digest.slice(7, 10)}/${l.createdBy}`).join(',')}`);
          return { ref: `${id}-imported` };
        },
      }),
    );
    return { id, platforms: [], labels: {}, client: createKilnClient(worker.WorkerService, transport) };
  };
  const a = fakeWorker('w-a', opts.deadHolder);
  const b = fakeWorker('w-b');
  const store = createKilnClient(
    content.ContentService,
    createInMemoryTransport((r) =>
      r.service(content.ContentService, {
        async createLease(req) {
          leases.add(req.id);
          return { lease: { id: req.id } };
        },
        async deleteLease(req) {
          leases.delete(req.id);
          return {};
        },
      }),
    ),
  );
  const db = openSolverDatabase(':memory:');
  const records = new CacheStore(db);
  const cache = new VertexCache(records, { list: async () => [a, b], get: async (id) => [a, b].find((w) => w.id === id) }, silentLogger(), async () => store);
  const pull = { buildId: 'b1', signal: new AbortController().signal };
  return { calls, leases, records, cache, a, b, pull };
}

describe('VertexCache: results held by another worker', () => {
  it('pulls a result whose run took longer than the pull is expected to, moving the record and its lease; the run is not repeated', async () => {
    const { calls, leases, records, cache, b, pull } = setup();
    records.put('k1', 'w-a', ['a-ref'], 'RUN sleep 1', { runMs: 1_000 });
    let ran = 0;
    const res = await cache.resolve('k1', b, { lookup: true, description: 'RUN sleep 1', holder: 'b1', pull }, async () => {
      ran++;
      return ['b-ran'];
    });
    expect(ran).toBe(0);
    expect(res).toMatchObject({ cached: true, workerId: 'w-b', refs: ['w-b-imported'], pulledFrom: 'w-a' });
    const rec = records.get('k1')!;
    expect(rec).toMatchObject({ workerId: 'w-b', refs: ['w-b-imported'], runMs: 1_000 });
    expect(rec.lease).toMatch(/^kiln-pull-w-b-[0-9a-f]{16}$/);
    expect([...leases]).toEqual([rec.lease]);
    expect(calls).toEqual([
      'w-a retain a-ref pull',
      'w-a getLayers a-ref',
      `w-b importLayers 111/RUN sleep 1`,
      'w-a drop a-ref pull',
      `w-b retain w-b-imported ${CACHE_OWNER}`,
      'w-b retain w-b-imported b1#1',
      'w-b release w-b-imported',
      `w-a drop a-ref ${CACHE_OWNER}`,
    ]);

    // Rebuilt on w-b (e.g. --no-cache): the pulled refs go, and with them the lease on their blobs.
    await cache.resolve('k1', b, { lookup: false, description: 'RUN sleep 1', holder: 'b2' }, async () => ['b-ran']);
    expect(records.get('k1')).toMatchObject({ workerId: 'w-b', refs: ['b-ran'], lease: null });
    expect(leases.size).toBe(0);
  });

  it('runs a step that ran quicker than a pull would take, and one whose holder does not answer', async () => {
    for (const [deadHolder, runMs] of [[false, 5], [true, 1_000]] as const) {
      const { calls, leases, records, cache, b, pull } = setup({ deadHolder });
      records.put('k1', 'w-a', ['a-ref'], 'RUN quick', { runMs });
      const res = await cache.resolve('k1', b, { lookup: true, description: 'RUN quick', holder: 'b1', pull }, async () => ['b-ran']);
      expect(res).toMatchObject({ cached: false, workerId: 'w-b', refs: ['b-ran'] });
      expect(calls.filter((c) => c.includes('importLayers'))).toEqual([]);
      expect(records.get('k1')).toMatchObject({ workerId: 'w-b', refs: ['b-ran'], lease: null });
      expect(leases.size).toBe(0);
    }
  });

  it('never pulls without the pull option (a source step)', async () => {
    const { calls, records, cache, b } = setup();
    records.put('k1', 'w-a', ['a-ref'], 'FROM busybox', { runMs: 5_000 });
    const res = await cache.resolve('k1', b, { lookup: true, description: 'FROM busybox', holder: 'b1' }, async () => ['b-ran']);
    expect(res.cached).toBe(false);
    expect(calls.some((c) => c.includes('getLayers'))).toBe(false);
  });
});

describe('VertexCache.availability (placement)', () => {
  it('counts a held step as 1 on its holder and, elsewhere, as the share of its run time a pull saves', async () => {
    const { records, cache, a, b } = setup();
    // 4096 bytes at the default 20 MB/s + 150 ms fixed: about 150 ms a pull.
    records.put('slow', 'w-a', ['r1'], 'RUN sleep 1', { runMs: 1_000 });
    records.put('quick', 'w-a', ['r2'], 'RUN echo', { runMs: 20 });
    records.put('unknown', 'w-b', ['r3'], 'RUN imported', { runMs: null });
    records.put('gone', 'w-gone', ['r4'], 'RUN elsewhere', { runMs: 5_000 });
    const got = await cache.availability(['slow', 'quick', 'unknown', 'gone', 'missing'], [a, b]);
    expect(got.get('w-a')).toBeCloseTo(2 + 0.5, 5);
    // slow: 1 - ~150/1000; quick: pulling costs more than running (0).
    expect(got.get('w-b')).toBeGreaterThan(1 + 0.8);
    expect(got.get('w-b')).toBeLessThan(1 + 0.9);
    expect(got.has('w-gone')).toBe(false);
  });

  it('gives nothing to pull when the holder no longer has the result or there is one worker', async () => {
    const { records, cache, a, b } = setup();
    records.put('slow', 'w-a', ['r1'], 'RUN sleep 1', { runMs: 1_000 });
    expect((await cache.availability(['slow'], [a])).get('w-a')).toBe(1);
    expect((await cache.availability(['slow'], [b])).size).toBe(0);
  });
});
