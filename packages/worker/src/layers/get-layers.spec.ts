import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { worker as workerApi } from '@kiln/api';
import { createInMemoryTransport, createKilnClient, silentLogger } from '@kiln/common';
import { FileChain, local, type State } from '@kiln/llb';
import { createDirectorySnapshotter } from '@kiln/snapshotter';
import { exportTree } from '../fs/tar-export.js';
import { extractTar } from '../fs/untar.js';
import { createWorkerServiceImpl } from '../rpc/worker-service.js';
import { createEventCollector, createFakeSession, createMemoryContent, FakeExecutor, solve, type MemoryContent } from '../testing/index.js';
import { createWorker, type Worker } from '../worker.js';

const sha = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const text = (s: string) => new TextEncoder().encode(s);

describe('getLayers', () => {
  let root: string;
  let ctxDir: string;
  let store: MemoryContent;
  const workers: Worker[] = [];

  function newWorker(opts: { layerThreads?: number; withContent?: boolean } = {}): Worker {
    const w = createWorker({
      id: `w-layers-${workers.length}`,
      backend: 'oci',
      snapshotter: createDirectorySnapshotter({ root: path.join(root, `snapshots-${workers.length}`) }),
      executor: new FakeExecutor(),
      sessions: createFakeSession({ context: { dir: ctxDir } }).client,
      publish: createEventCollector().publish,
      logger: silentLogger(),
      ...(opts.withContent === false ? {} : { content: store.client }),
      stateDir: path.join(root, `state-${workers.length}`),
      layerThreads: opts.layerThreads,
    });
    workers.push(w);
    return w;
  }

  beforeEach(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'kiln-layers-'));
    ctxDir = path.join(root, 'ctx');
    await mkdir(path.join(ctxDir, 'app'), { recursive: true });
    await writeFile(path.join(ctxDir, 'app/main.sh'), 'echo hi\n');
    await writeFile(path.join(ctxDir, 'app/old.txt'), 'old\n');
    await writeFile(path.join(ctxDir, 'README'), 'readme\n');
    store = createMemoryContent();
  });
  afterEach(async () => {
    for (const w of workers.splice(0)) await w.close();
    await rm(root, { recursive: true, force: true });
  });

  /** context, then one layer adding a file and removing another (each step its own op). */
  function build(): State {
    const ctx = local('context');
    const added = FileChain.start().mkfile('/app/new.txt', 0o644, text('new\n')).apply(ctx, { description: 'ADD new.txt' });
    return FileChain.start().rm('/app/old.txt').apply(added, { description: 'RUN rm old.txt' });
  }

  const blobOf = (digest: string) => store.blobs.get(digest)!.data;
  const gnuList = (blob: Buffer, flag: string) =>
    execFileSync('tar', [`-t${flag}f`, '-'], { input: blob }).toString('utf8').trim().split('\n');

  it('makes one gzip layer per op, checked by GNU tar, leased, with diff ids and descriptions', async () => {
    const w = newWorker();
    const ref = (await solve(w, build()))!;
    const layers = await w.getLayers(ref, { lease: 'l1' });
    expect(layers).toHaveLength(3);
    for (const l of layers) {
      expect(l.mediaType).toBe('application/vnd.oci.image.layer.v1.tar+gzip');
      expect(l.fromBase).toBe(false);
      const blob = blobOf(l.digest);
      expect(sha(blob)).toBe(l.digest);
      expect(blob.length).toBe(l.size);
      expect(sha(gunzipSync(blob))).toBe(l.diffId);
      expect(store.blobs.get(l.digest)!.labels['containerd.io/uncompressed']).toBe(l.diffId);
      expect(store.leases.get('l1')!.has(l.digest)).toBe(true);
    }
    expect(gnuList(blobOf(layers[0]!.digest), 'z')).toEqual(['README', 'app/', 'app/main.sh', 'app/old.txt']);
    expect(gnuList(blobOf(layers[1]!.digest), 'z')).toEqual(['app/', 'app/new.txt']);
    expect(gnuList(blobOf(layers[2]!.digest), 'z')).toEqual(['app/', 'app/.wh.old.txt']);
    expect(layers.map((l) => l.createdBy)).toEqual([undefined, 'ADD new.txt', 'RUN rm old.txt']);
  });

  it('applies back: base + diffs == the ref, through the worker\'s own whiteout-aware untar', async () => {
    const w = newWorker();
    const ref = (await solve(w, build()))!;
    const out = path.join(root, 'applied');
    await mkdir(out);
    for (const l of await w.getLayers(ref, { compression: 'uncompressed' })) {
      expect(l.digest).toBe(l.diffId);
      expect(l.mediaType).toBe('application/vnd.oci.image.layer.v1.tar');
      await extractTar(out, (async function* () { yield blobOf(l.digest); })(), { logger: silentLogger(), whiteouts: true });
    }
    const applied = await collect(exportTree(out));
    const expected = await collect(w.exportRef(ref));
    expect(applied.equals(expected)).toBe(true);
  });

  it('reuses layers made before, and makes them again when the store lost the blob', async () => {
    const w = newWorker();
    const ref = (await solve(w, build()))!;
    const first = await w.getLayers(ref, { lease: 'a' });
    const writes = store.writes;
    const second = await w.getLayers(ref, { lease: 'b' });
    expect(second).toEqual(first);
    expect(store.writes).toBe(writes);
    expect([...store.leases.get('b')!].sort()).toEqual(first.map((l) => l.digest).sort());
    store.blobs.delete(first[1]!.digest);
    const third = await w.getLayers(ref, { lease: 'c' });
    expect(third).toEqual(first);
    expect(store.writes).toBe(writes + 1);
    expect(store.blobs.has(first[1]!.digest)).toBe(true);
  });

  it('dates each layer with its snapshot\'s creation time, the same in every call', async () => {
    const before = Date.now();
    const w = newWorker();
    const ref = (await solve(w, build()))!;
    const first = await w.getLayers(ref, {});
    expect(first.length).toBeGreaterThan(0);
    for (const l of first) {
      expect(l.createdAtMs).toBeGreaterThanOrEqual(before - 1000);
      expect(l.createdAtMs).toBeLessThanOrEqual(Date.now());
    }
    // Layers made in order: times never go back.
    expect(first.map((l) => l.createdAtMs)).toEqual([...first.map((l) => l.createdAtMs!)].sort((a, b) => a - b));
    await new Promise((r) => setTimeout(r, 20));
    expect((await w.getLayers(ref, {})).map((l) => l.createdAtMs)).toEqual(first.map((l) => l.createdAtMs));
  });

  it('makes a layer once for concurrent calls, and stops on cancellation leaving no staged files', async () => {
    const w = newWorker();
    const ref = (await solve(w, build()))!;
    const [a, b] = await Promise.all([w.getLayers(ref, { lease: 'x' }), w.getLayers(ref, { lease: 'y' })]);
    expect(b).toEqual(a);
    expect(store.writes).toBe(3);
    expect([...store.leases.get('y')!].sort()).toEqual(a.map((l) => l.digest).sort());
    const ac = new AbortController();
    const p = w.getLayers(ref, { compression: 'zstd', signal: ac.signal });
    ac.abort();
    await expect(p).rejects.toMatchObject({ code: 'canceled' });
    const tmp = path.join(root, `state-${workers.length - 1}`, 'layers', 'tmp');
    expect(existsSync(tmp) ? readdirSync(tmp) : []).toEqual([]);
    // the worker still works after a canceled call
    expect((await w.getLayers(ref, { compression: 'zstd' })).length).toBe(3);
  });

  it('fails a layer whose store write breaks mid-stream (no hang, the store error), then makes it on the next call', async () => {
    const w = newWorker();
    const ref = (await solve(w, build()))!;
    store.failWrites = 1;
    await expect(w.getLayers(ref, { compression: 'uncompressed' })).rejects.toThrow(/content store broke mid-write/);
    const layers = await w.getLayers(ref, { compression: 'uncompressed' });
    for (const l of layers) expect(sha(blobOf(l.digest))).toBe(l.digest);
  });

  it('leaves empty diffs out', async () => {
    const w = newWorker();
    const ctx = local('context');
    const noop = FileChain.start().rm('/does-not-exist', { allowNotFound: true }).apply(ctx);
    const ref = (await solve(w, FileChain.start().mkfile('/x', 0o600, text('x')).apply(noop)))!;
    const layers = await w.getLayers(ref);
    expect(layers).toHaveLength(2);
    expect(gnuList(blobOf(layers[1]!.digest), 'z')).toEqual(['x']);
  });

  it('writes zstd and docker media types, with levels, and clamps mtimes to source_date_epoch', async () => {
    const w = newWorker();
    const ref = (await solve(w, build()))!;
    const z = await w.getLayers(ref, { compression: 'zstd', compressionLevel: 19, ociMediaTypes: true });
    expect(z.map((l) => l.mediaType)).toEqual(Array(3).fill('application/vnd.oci.image.layer.v1.tar+zstd'));
    const tar = execFileSync('zstd', ['-d', '-c', '-q'], { input: blobOf(z[0]!.digest) });
    expect(sha(tar)).toBe(z[0]!.diffId);
    const d = await w.getLayers(ref, { compression: 'gzip', ociMediaTypes: false, sourceDateEpoch: 86_400 });
    expect(d.map((l) => l.mediaType)).toEqual(Array(3).fill('application/vnd.docker.image.rootfs.diff.tar.gzip'));
    expect(d[0]!.diffId).not.toBe(z[0]!.diffId);
    const listing = execFileSync('tar', ['--full-time', '--utc', '-tzvf', '-'], { input: blobOf(d[0]!.digest) }).toString();
    for (const line of listing.trim().split('\n')) expect(line).toContain('1970-01-02 00:00:00');
    await expect(w.getLayers(ref, { compression: 'gzip', compressionLevel: 12 })).rejects.toMatchObject({ code: 'invalid_argument' });
  });

  it('gives the same bytes with 4 threads as with 1', async () => {
    const big = (seed: number) => Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * seed) % 251));
    let state: State = local('context');
    for (let i = 1; i <= 4; i++) state = FileChain.start().mkfile(`/layer${i}.bin`, 0o644, big(i)).apply(state);
    // Each worker makes its own snapshots (own mtimes): clamp them so the bytes can be compared.
    const runs: string[][] = [];
    for (const threads of [1, 4]) {
      const w = newWorker({ layerThreads: threads });
      const ref = (await solve(w, state))!;
      runs.push((await w.getLayers(ref, { sourceDateEpoch: 0 })).map((l) => `${l.digest} ${l.diffId}`));
    }
    expect(runs[0]).toHaveLength(5);
    expect(runs[1]).toEqual(runs[0]);
  });

  it('compresses a big layer in several gzip members that GNU gzip, zlib and GNU tar read as one stream, the same bytes every time', async () => {
    // 10 MiB of noise: more than two 4 MiB members, so the members are compressed in parallel.
    const noise = createHash('sha512');
    const chunks: Buffer[] = [];
    for (let i = 0; i < (10 << 20) / 64; i++) chunks.push(noise.copy().update(String(i)).digest());
    const state = FileChain.start().mkfile('/big.bin', 0o644, Buffer.concat(chunks)).apply(local('context'));
    const digests: string[] = [];
    for (const threads of [1, 2]) {
      const w = newWorker({ layerThreads: threads });
      const ref = (await solve(w, state))!;
      const layer = (await w.getLayers(ref, { sourceDateEpoch: 0 })).at(-1)!;
      const blob = blobOf(layer.digest);
      const members = blob.reduce((n, b, i) => n + (b === 0x1f && blob[i + 1] === 0x8b && blob[i + 2] === 8 && blob[i + 3] === 0 ? 1 : 0), 0);
      expect(members).toBeGreaterThanOrEqual(3);
      expect(sha(gunzipSync(blob))).toBe(layer.diffId);
      expect(sha(execFileSync('gzip', ['-dc'], { input: blob, maxBuffer: 64 << 20 }))).toBe(layer.diffId);
      expect(gnuList(blob, 'z')).toEqual(['big.bin']);
      digests.push(layer.digest);
    }
    expect(digests[1]).toBe(digests[0]);
  });

  it('stores gzip members that do not compress (noise) and deflates those that do, readable as one stream', async () => {
    const noise = createHash('sha512');
    const chunks: Buffer[] = [];
    for (let i = 0; i < (8 << 20) / 64; i++) chunks.push(noise.copy().update(String(i)).digest());
    const state = FileChain.start()
      .mkfile('/a-noise.bin', 0o644, Buffer.concat(chunks))
      .mkfile('/b-zeros.bin', 0o644, Buffer.alloc(8 << 20))
      .apply(local('context'));
    const w = newWorker();
    const ref = (await solve(w, state))!;
    const layer = (await w.getLayers(ref, { sourceDateEpoch: 0 })).at(-1)!;
    const blob = blobOf(layer.digest);
    // Each member: a 10-byte gzip header (no flags), then deflate blocks; BTYPE 00 (bits 1-2 of the first byte) is a stored block.
    const blockTypes: number[] = [];
    for (let i = 0; i + 10 < blob.length; i++) {
      if (blob[i] === 0x1f && blob[i + 1] === 0x8b && blob[i + 2] === 8 && blob[i + 3] === 0) blockTypes.push((blob[i + 10]! >> 1) & 3);
    }
    // Members are cut every 4 MiB of tar: two of noise, then the zeros (a stray header match inside stored noise is possible, so look at the ends).
    expect(blockTypes.slice(0, 2)).toEqual([0, 0]);
    expect(blockTypes.at(-1)).not.toBe(0);
    expect(blob.length).toBeLessThan((8 << 20) + (1 << 20));
    expect(sha(gunzipSync(blob))).toBe(layer.diffId);
    expect(sha(execFileSync('gzip', ['-dc'], { input: blob, maxBuffer: 64 << 20 }))).toBe(layer.diffId);
    expect(gnuList(blob, 'z')).toEqual(['a-noise.bin', 'b-zeros.bin']);
  });

  it('fails clearly without a content store or for an unknown ref, and over RPC', async () => {
    const none = newWorker({ withContent: false });
    const ref = (await solve(none, build()))!;
    await expect(none.getLayers(ref)).rejects.toMatchObject({ code: 'failed_precondition' });
    const w = newWorker();
    await expect(w.getLayers('ref-nope')).rejects.toMatchObject({ code: 'not_found' });
    const client = createKilnClient(workerApi.WorkerService, createInMemoryTransport((r) => r.service(workerApi.WorkerService, createWorkerServiceImpl(w))));
    await expect(client.getLayers({ ref: 'x', compression: 'lz4' })).rejects.toMatchObject({ code: 'invalid_argument' });
    const okRef = (await solve(w, build()))!;
    const res = await client.getLayers({ ref: okRef, compression: 'uncompressed', ociMediaTypes: false, lease: 'l' });
    expect(res.layers.map((l) => l.mediaType)).toEqual(Array(3).fill('application/vnd.docker.image.rootfs.diff.tar'));
    expect(res.layers.every((l) => l.size > 0n && l.digest === l.diffId)).toBe(true);
  });
});

async function collect(src: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const c of src) parts.push(c);
  return Buffer.concat(parts);
}
