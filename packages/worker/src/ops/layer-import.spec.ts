import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { silentLogger } from '@kiln/common';
import { FileChain, local } from '@kiln/llb';
import { createDirectorySnapshotter } from '@kiln/snapshotter';
import { createEventCollector, createFakeSession, createMemoryContent, FakeExecutor, solve, type MemoryContent } from '../testing/index.js';
import { createWorker, type Worker } from '../worker.js';

const text = (s: string) => new TextEncoder().encode(s);

async function treeOf(w: Worker, ref: string): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const c of w.exportRef(ref)) parts.push(c);
  return Buffer.concat(parts);
}

describe('importLayers', () => {
  let root: string;
  let store: MemoryContent;
  const workers: Worker[] = [];

  function newWorker(ctxDir: string): Worker {
    const n = workers.length;
    const w = createWorker({
      id: `w-import-${n}`,
      backend: 'oci',
      snapshotter: createDirectorySnapshotter({ root: path.join(root, `snapshots-${n}`) }),
      executor: new FakeExecutor(),
      sessions: createFakeSession({ context: { dir: ctxDir } }).client,
      publish: createEventCollector().publish,
      logger: silentLogger(),
      content: store.client,
      stateDir: path.join(root, `state-${n}`),
    });
    workers.push(w);
    return w;
  }

  beforeEach(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'kiln-import-'));
    await mkdir(path.join(root, 'ctx/app'), { recursive: true });
    await writeFile(path.join(root, 'ctx/app/old.txt'), 'old\n');
    store = createMemoryContent();
  });
  afterEach(async () => {
    for (const w of workers.splice(0)) await w.close();
    await rm(root, { recursive: true, force: true });
  });

  it('rebuilds a ref on another worker from its layer blobs, with the same tree and the same layers', async () => {
    const a = newWorker(path.join(root, 'ctx'));
    const added = FileChain.start().mkfile('/app/new.txt', 0o644, text('new\n')).apply(local('context'), { description: 'ADD new.txt' });
    const state = FileChain.start().rm('/app/old.txt').apply(added, { description: 'RUN rm old.txt' });
    const ref = (await solve(a, state))!;
    const layers = await a.getLayers(ref, { lease: 'l' });
    expect(layers).toHaveLength(3);

    const b = newWorker(path.join(root, 'empty'));
    const imported = await b.importLayers(layers.map(({ digest, size, mediaType, diffId, createdBy }) => ({ digest, size, mediaType, diffId, createdBy })));
    expect((await treeOf(b, imported)).equals(await treeOf(a, ref))).toBe(true);
    const again = await b.getLayers(imported, { lease: 'l' });
    expect(again.map((l) => [l.digest, l.diffId, l.fromBase, l.createdBy])).toEqual(layers.map((l) => [l.digest, l.diffId, false, l.createdBy]));
    // With an epoch (rewrite-timestamp), layers made here are rewritten; imported ones stay as they came.
    expect((await a.getLayers(ref, { lease: 'l', sourceDateEpoch: 1_700_000_000 })).map((l) => l.timestampsRewritten)).toEqual([true, true, true]);
    const importedWithEpoch = await b.getLayers(imported, { lease: 'l', sourceDateEpoch: 1_700_000_000 });
    expect(importedWithEpoch.map((l) => [l.digest, l.timestampsRewritten])).toEqual(layers.map((l) => [l.digest, false]));

    // A prefix of the chain reuses the snapshots made for the whole chain.
    const prefix = await b.importLayers(layers.slice(0, 2));
    expect((await b.getLayers(prefix, { lease: 'l' })).map((l) => l.digest)).toEqual(layers.slice(0, 2).map((l) => l.digest));
    await b.release([imported, prefix]);
  });

  it('refuses a blob that does not unpack to its diff id, and an unknown blob', async () => {
    const a = newWorker(path.join(root, 'ctx'));
    const ref = (await solve(a, local('context')))!;
    const [layer] = await a.getLayers(ref, { lease: 'l' });
    const b = newWorker(path.join(root, 'empty'));
    const wrongDiff = `sha256:${'1'.repeat(64)}`;
    await expect(b.importLayers([{ ...layer!, diffId: wrongDiff }])).rejects.toMatchObject({ code: 'failed_precondition', message: expect.stringContaining(wrongDiff) });
    await expect(b.importLayers([{ ...layer!, digest: `sha256:${'2'.repeat(64)}` }])).rejects.toMatchObject({ code: 'not_found' });
    await expect(b.importLayers([{ ...layer!, digest: 'md5:x' }])).rejects.toMatchObject({ code: 'invalid_argument' });
  });
});
