import { content, worker } from '@kiln/api';
import { createInMemoryTransport, createKilnClient, silentLogger, UnavailableError } from '@kiln/common';
import { describe, expect, it } from 'vitest';
import { CACHE_OWNER, CacheStore } from '../cache/cache-store.js';
import { openSolverDatabase } from '../cache/sqlite.js';
import { UNKNOWN_STEP_MS, workOn } from './placement-cost.js';
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

describe('VertexCache.placementCosts (placement)', () => {
  it('tells, per key, its live holder, its run time and what a pull is expected to cost', async () => {
    const { records, cache, a, b } = setup();
    // 4096 bytes at the default 20 MB/s + 150 ms fixed: about 150 ms a pull.
    records.put('slow', 'w-a', ['r1'], 'RUN sleep 1', { runMs: 1_000 });
    records.put('quick', 'w-a', ['r2'], 'RUN echo', { runMs: 20 });
    records.put('unknown', 'w-b', ['r3'], 'RUN imported', { runMs: null });
    records.put('gone', 'w-gone', ['r4'], 'RUN elsewhere', { runMs: 5_000 });
    const got = await cache.placementCosts(['slow', 'quick', 'unknown', 'gone', 'missing'], [a, b]);
    expect(got.get('slow')).toMatchObject({ holder: 'w-a', runMs: 1_000 });
    expect(got.get('slow')!.pullMs).toBeCloseTo(150 + 4096 / 20_000, 5);
    expect(got.get('unknown')).toMatchObject({ holder: 'w-b', runMs: null });
    // A holder not among the live workers: only the run time is known.
    expect(got.get('gone')).toEqual({ runMs: 5_000 });
    expect(got.has('missing')).toBe(false);
    // What each worker has to do for them (placement-cost.ts): the holder nothing, the other the cheaper of pull and run.
    expect(workOn(['slow', 'quick', 'unknown', 'gone', 'missing'], got, 'w-a')).toEqual({ ms: got.get('unknown')!.pullMs! + 5_000 + UNKNOWN_STEP_MS, held: 2 });
    expect(workOn(['slow', 'quick'], got, 'w-b').ms).toBeCloseTo(got.get('slow')!.pullMs! + 20, 5);
  });

  it('counts a step being run now as held by the worker running it (a second build of the project meets the first there)', async () => {
    const { records, cache, a, b } = setup();
    records.put('k1', 'w-a', ['r1'], 'RUN sleep 1', { runMs: 1_000 });
    let finish!: (refs: string[]) => void;
    const running = cache.resolve('k1', b, { lookup: false, description: 'RUN sleep 1', holder: 'b1' }, () => new Promise<string[]>((r) => (finish = r)));
    const costs = await cache.placementCosts(['k1'], [a, b]);
    expect(costs.get('k1')).toMatchObject({ holder: 'w-b', runMs: 1_000 });
    expect(workOn(['k1'], costs, 'w-b')).toEqual({ ms: 0, held: 1 });
    finish(['b-ran']);
    await running;
    expect((await cache.placementCosts(['k1'], [a, b])).get('k1')).toMatchObject({ holder: 'w-b' });
    expect(records.get('k1')).toMatchObject({ workerId: 'w-b', refs: ['b-ran'] });
  });

  it('gives nothing to pull when the holder no longer has the result or there is one worker', async () => {
    const { records, cache, a, b } = setup();
    records.put('slow', 'w-a', ['r1'], 'RUN sleep 1', { runMs: 1_000 });
    expect(await cache.placementCosts(['slow'], [a])).toEqual(new Map([['slow', { holder: 'w-a', runMs: 1_000, pullMs: undefined }]]));
    expect(await cache.placementCosts(['slow'], [b])).toEqual(new Map([['slow', { runMs: 1_000 }]]));
  });
});
