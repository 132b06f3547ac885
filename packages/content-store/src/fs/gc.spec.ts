import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromBinary } from '@bufbuild/protobuf';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { events } from '@kiln/api';
import { sha256 } from '@kiln/common';
import type { GcResult, RootProvider } from '../content-store.js';
import { caught, chunks, gated, readAll, until } from '../testing/fixtures/helpers.js';
import { mark, planSweep } from './gc-plan.js';
import { openLocalContentStore, type LocalContentStore, type LocalContentStoreOptions } from './local-content-store.js';

describe('LocalContentStore leases and GC', () => {
  let root: string;
  let store: LocalContentStore;
  let clock: number;
  const published: { subject: string; event: events.ContentEvent }[] = [];

  async function reopen(extra: Partial<LocalContentStoreOptions> = {}) {
    await store?.close();
    store = await openLocalContentStore({
      root,
      now: () => clock,
      publish: (subject, data) => {
        published.push({ subject, event: fromBinary(events.ContentEventSchema, data) });
      },
      ...extra,
    });
  }

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'kiln-cs-gc-'));
    clock = Date.now();
    published.length = 0;
    store = undefined as unknown as LocalContentStore;
    await reopen();
  });

  afterEach(async () => {
    await store.close();
    await rm(root, { recursive: true, force: true });
  });

  const put = async (content: string, labels: Record<string, string> = {}, lease?: string) =>
    (await store.write({ ref: `put-${content}`, labels, lease }, chunks(content))).digest;
  const exists = async (d: string) => store.info(d).then(
    () => true,
    () => false,
  );
  const files = async () => (await readdir(join(root, 'blobs', 'sha256'))).length;

  it('manages leases and their resources', async () => {
    const a = await store.createLease('build-1', { labels: { who: 'solver' } });
    expect(a).toMatchObject({ id: 'build-1', labels: { who: 'solver' } });
    expect(a.expiresAt).toBeUndefined();
    const b = await store.createLease(undefined, { expiresAt: new Date(clock + 60_000) });
    expect(b.id).toMatch(/^lease-/);
    expect(b.expiresAt?.getTime()).toBe(clock + 60_000);
    expect((await caught(store.createLease('build-1'))).code).toBe('already_exists');
    expect((await store.listLeases()).map((l) => l.id)).toEqual(['build-1', b.id].sort());

    const d1 = sha256('not written yet');
    const d2 = await put('written');
    await store.addLeaseResource('build-1', d1);
    await store.addLeaseResource('build-1', d2);
    await store.addLeaseResource('build-1', d2); // idempotent
    expect(await store.listLeaseResources('build-1')).toEqual([d1, d2].sort());
    await store.deleteLeaseResource('build-1', d1);
    expect(await store.listLeaseResources('build-1')).toEqual([d2]);
    expect((await caught(store.addLeaseResource('nope', d1))).code).toBe('not_found');
    expect((await caught(store.addLeaseResource('build-1', 'sha256:bad'))).code).toBe('invalid_argument');
    expect((await caught(store.listLeaseResources('nope'))).code).toBe('not_found');

    clock += 61_000;
    expect((await caught(store.addLeaseResource(b.id, d1))).code).toBe('failed_precondition');
    await store.deleteLease('build-1');
    expect((await caught(store.deleteLease('build-1'))).code).toBe('not_found');
    expect((await caught(store.write({ ref: 'x', lease: 'build-1' }, chunks('x')))).code).toBe('not_found');
  });

  it('marks from roots, leases, providers and gc.ref labels, and sweeps the rest', async () => {
    // An image: index -> manifest -> config + layers; only the index is a root.
    const layer0 = await put('layer0');
    const layer1 = await put('layer1');
    const config = await put('config');
    const manifest = await put('manifest', {
      'containerd.io/gc.ref.content.config': config,
      'containerd.io/gc.ref.content.l.0': layer0,
      'containerd.io/gc.ref.content.l.1': layer1,
    });
    const index = await put('index', { 'containerd.io/gc.ref.content.m.0': manifest, 'kiln.gc.root': '2024' });
    // The same, unrooted: all of it goes.
    const oldLayer = await put('old layer');
    const oldManifest = await put('old manifest', { 'containerd.io/gc.ref.content.l.0': oldLayer });
    // Leased (live and expired), a provider root and its child, a dangling ref, plain garbage.
    await store.createLease('live');
    await store.createLease('dead', { expiresAt: new Date(clock + 1000) });
    const leased = await put('leased', {}, 'live');
    const expiredLease = await put('expired lease', {}, 'dead');
    const cacheChild = await put('cache child');
    const cached = await put('cached', { 'kiln.gc.ref.content.child': cacheChild, 'containerd.io/gc.ref.content.x': sha256('absent') });
    const garbage = await put('garbage');
    const provider: RootProvider = { name: 'solver-cache', roots: () => [cached, 'not a digest'] };
    const remove = store.addRootProvider(provider);
    clock += 2000;

    const keep = [layer0, layer1, config, manifest, index, leased, cacheChild, cached];
    const gone = [oldLayer, oldManifest, expiredLease, garbage];
    const dry = await store.gc({ dryRun: true });
    expect(dry.dryRun).toBe(true);
    expect([...dry.removed].sort()).toEqual([...gone].sort());
    expect(dry.bytesFreed).toBe(['old layer', 'old manifest', 'expired lease', 'garbage'].join('').length);
    expect(dry.leasesExpired).toEqual(['dead']);
    for (const d of [...keep, ...gone]) expect(await exists(d)).toBe(true);
    expect(await files()).toBe(12);

    published.length = 0;
    const res = await store.gc();
    expect(res).toMatchObject({ dryRun: false, bytesFreed: dry.bytesFreed, leasesExpired: ['dead'] });
    expect([...res.removed].sort()).toEqual([...gone].sort());
    for (const d of keep) expect(await exists(d)).toBe(true);
    for (const d of gone) expect(await exists(d)).toBe(false);
    expect(await files()).toBe(8);
    expect((await store.listLeases()).map((l) => l.id)).toEqual(['live']);
    expect(published.map((p) => [p.subject, p.event.kind, p.event.digest]).sort()).toEqual(
      gone.map((d) => ['kiln.content.deleted', 'deleted', d]).sort(),
    );

    // Dropping a root lets its whole tree go.
    remove();
    await store.updateLabels(index, { 'kiln.gc.root': '' });
    await store.deleteLease('live');
    const all = await store.gc();
    expect([...all.removed].sort()).toEqual([...keep].sort());
    expect(await files()).toBe(0);
  });

  it('a failing root provider stops the GC before anything is removed', async () => {
    const garbage = await put('garbage');
    await reopen({ rootProviders: [{ name: 'images', roots: async () => Promise.reject(new Error('db down')) }] });
    const err = await caught(store.gc());
    expect(err.code).toBe('unavailable');
    expect(err.message).toMatch(/images.*db down/);
    expect(await exists(garbage)).toBe(true);
  });

  it('keeps what is written, leased or used while a GC runs, and blobs being written', async () => {
    const old = await put('old');
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let asked = false;
    store.addRootProvider({
      name: 'slow',
      async *roots() {
        asked = true;
        await gate;
      },
    });
    const active = gated('in', ' flight');
    const inflight = store.write({ ref: 'inflight', expectedDigest: sha256('in flight') }, active.data);
    const gc = store.gc();
    await until(() => asked);
    const during = await put('written during the GC');
    await readAll(store.read(old)); // a read counts as use, too
    release();
    const res = await gc;
    expect(res.removed).toEqual([]);
    expect(await exists(during)).toBe(true);
    expect(await store.status('inflight')).toMatchObject({ active: true });
    active.release();
    await inflight;
    const next = await store.gc();
    expect([...next.removed].sort()).toEqual([old, during, sha256('in flight')].sort());
  });

  it('an interrupted ingest keeps its expected blob until the ingest expires', async () => {
    await expect(
      store.write(
        { ref: 'resume-me', expectedDigest: sha256('other') },
        (async function* () {
          yield new TextEncoder().encode('oth');
          throw new Error('cut');
        })(),
      ),
    ).rejects.toThrow('cut');
    const other = await put('other'); // written meanwhile by someone else, unreferenced
    const unrelated = await put('unrelated');
    expect((await store.gc()).removed).toEqual([unrelated]);
    clock += 25 * 60 * 60_000; // past the default 24 h ingest expiry
    expect(await store.gc()).toMatchObject({ removed: [other], ingestsRemoved: ['resume-me'] });
  });

  it('keepBytes removes least recently used unreferenced blobs first, never a child before its parent', async () => {
    const t0 = clock;
    const at = async (dt: number, content: string, labels: Record<string, string> = {}) => {
      clock = t0 + dt;
      return put(content, labels);
    };
    const child = await at(1, 'c'.repeat(100)); // oldest own use...
    const a = await at(2, 'a'.repeat(100));
    const b = await at(3, 'b'.repeat(100));
    const parent = await at(5, 'p'.repeat(100), { 'containerd.io/gc.ref.content.l.0': child }); // ...but its parent is newest
    const rooted = await at(0, 'r'.repeat(100), { 'kiln.gc.root': 'x' });
    clock = t0 + 10;
    // 500 bytes in the store, keep 250: a (used at 2), b (3), then parent and child together (5).
    expect((await store.gc({ dryRun: true, keepBytes: 250 })).removed).toEqual([a, b, ...[child, parent].sort()]);
    const res = await store.gc({ keepBytes: 300 });
    expect(res.removed).toEqual([a, b]);
    expect(res.bytesFreed).toBe(200);
    expect(await exists(child)).toBe(true); // kept for its parent
    // Reading the parent makes it (and so its child) recent; a newer unreferenced blob goes first.
    const d = await at(20, 'd'.repeat(100));
    clock = t0 + 30;
    await readAll(store.read(parent));
    expect((await store.gc({ keepBytes: 300 })).removed).toEqual([d]);
    expect((await store.gc({ keepBytes: 0 })).removed).toEqual([child, parent].sort());
    expect(await exists(rooted)).toBe(true);
  });

  it('keepDurationMs removes only blobs unused for that long', async () => {
    const old = await put('old');
    clock += 60_000;
    const fresh = await put('fresh');
    clock += 1000;
    const res = await store.gc({ keepDurationMs: 30_000 });
    expect(res.removed).toEqual([old]);
    expect(await exists(fresh)).toBe(true);
    // With keepBytes too: either reason removes a blob.
    expect((await store.gc({ keepDurationMs: 30_000, keepBytes: 0 })).removed).toEqual([fresh]);
  });

  it('a GC policy runs periodically until stopped', async () => {
    const results: GcResult[] = [];
    const handle = store.startGcPolicy({ intervalMs: 10, keepBytes: 0, onResult: (r) => results.push(r) });
    const garbage = await put('garbage');
    await until(() => results.some((r) => r.removed.includes(garbage)));
    await handle.stop();
    const n = results.length;
    await new Promise((r) => setTimeout(r, 40));
    expect(results.length).toBe(n);
    expect((await caught(async () => store.startGcPolicy({ intervalMs: 0 }))).code).toBe('invalid_argument');
    // close() stops policies too.
    store.startGcPolicy({ intervalMs: 5 });
    await store.close();
  });

  it('publishes committed and deleted events, and survives a failing publisher', async () => {
    const d = await put('event');
    await store.write({ ref: 'again', expectedDigest: d }, chunks('event')); // exists: no event
    await store.write({ ref: 'again2' }, chunks('event')); // same content: no event
    await store.delete(d);
    expect(published.map((p) => [p.subject, p.event.kind, p.event.digest, p.event.size])).toEqual([
      ['kiln.content.committed', 'committed', d, 5n],
      ['kiln.content.deleted', 'deleted', d, 5n],
    ]);
    await reopen({ publish: () => Promise.reject(new Error('bus down')) });
    await put('fine');
    await reopen({
      publish: () => {
        throw new Error('bus down');
      },
    });
    expect(await store.write({ ref: 'z' }, chunks('also fine'))).toMatchObject({ size: 9 });
  });
});

describe('gc plan', () => {
  const refs = (pairs: [string, string][]) => {
    const m = new Map<string, string[]>();
    for (const [p, c] of pairs) m.set(p, [...(m.get(p) ?? []), c]);
    return m;
  };

  it('marks transitively, cycles included', () => {
    expect([...mark(['a'], refs([['a', 'b'], ['b', 'c'], ['c', 'a'], ['x', 'y']]))].sort()).toEqual(['a', 'b', 'c']);
  });

  it('orders by effective last use, parents never after children', () => {
    const c = (digest: string, lastUsedAt: number, size = 10) => ({ digest, size, lastUsedAt });
    const cands = [c('child', 1), c('a', 2), c('parent', 5), c('grandchild', 0), c('loop1', 3), c('loop2', 4)];
    const r = refs([['parent', 'child'], ['child', 'grandchild'], ['loop1', 'loop2'], ['loop2', 'loop1']]);
    const order = planSweep(cands, r, { now: 100, totalBytes: 60 }).map((x) => x.digest);
    expect(order).toEqual(['a', 'loop1', 'loop2', 'child', 'grandchild', 'parent']);
    // Stops at whole groups: keep 35 of 60 bytes -> a (50 left), loops (30 left).
    expect(planSweep(cands, r, { now: 100, totalBytes: 60, keepBytes: 35 }).map((x) => x.digest)).toEqual(['a', 'loop1', 'loop2']);
    expect(planSweep(cands, r, { now: 100, totalBytes: 60, keepDurationMs: 95 }).map((x) => x.digest)).toEqual(['a', 'loop1', 'loop2']);
    expect(planSweep(cands, r, { now: 100, totalBytes: 60, keepDurationMs: 1000, keepBytes: 1000 })).toEqual([]);
  });
});

