import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { silentLogger } from '@kiln/common';
import { createOverlaySnapshotter, type Snapshotter } from '@kiln/snapshotter';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createMemoryContent, type MemoryContent } from '../testing/index.js';
import { CompressPool } from './compress-pool.js';
import { LayerCache } from './layer-cache.js';
import { LayerMaker } from './layer-maker.js';
import { LineageSnapshotter } from './lineage.js';

/** Layers on overlayfs are diffed from each snapshot's upper dir, but only over the parent that upper dir is relative to. */
describe('layers of overlay snapshots', () => {
  let root: string;
  let store: MemoryContent;
  let inner: Snapshotter;
  let snaps: LineageSnapshotter;
  let maker: LayerMaker;
  beforeEach(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'kiln-ovl-layers-'));
    store = createMemoryContent();
    inner = createOverlaySnapshotter({ root: path.join(root, 'snap') });
    snaps = new LineageSnapshotter(inner);
    maker = new LayerMaker({
      snapshots: snaps,
      content: store.client,
      pool: new CompressPool(1),
      cache: new LayerCache(undefined, silentLogger()),
      tmpDir: path.join(root, 'tmp'),
      logger: silentLogger(),
    });
  });
  afterEach(async () => {
    await maker.close();
    await snaps.close();
    await rm(root, { recursive: true, force: true });
  });

  /** Commits a snapshot on `parent` holding the given new files, marked as an op output. */
  async function step(key: string, parent: string | undefined, files: string[]): Promise<string> {
    const a = await snaps.prepare(key, parent);
    for (const f of files) await writeFile(path.join(a.path, f), f);
    const id = await snaps.commit(key);
    snaps.markOutput(id);
    return id;
  }

  const names = (digest: string) =>
    execFileSync('tar', ['-tf', '-'], { input: gunzipSync(store.blobs.get(digest)!.data) })
      .toString()
      .trim()
      .split('\n');

  it('holds only the step\'s own files, and a spliced-out step\'s files in its child\'s layer', async () => {
    const base = await step('base', undefined, ['a']);
    const mid = await step('mid', base, ['b']);
    const top = await step('top', mid, ['c']);
    const req = { compression: 'gzip' as const, level: 1, forceCompression: false, ociMediaTypes: true, lease: '' };
    expect((await maker.layers(top, req)).map((l) => names(l.digest))).toEqual([['a'], ['b'], ['c']]);

    // An intermediate (not an output) removed while its child lives: the child diffs against base.
    const i = await snaps.prepare('inter', base);
    await writeFile(path.join(i.path, 'x'), 'x');
    const inter = await snaps.commit('inter');
    const child = await step('child', inter, ['y']);
    await snaps.remove(inter);
    expect(snaps.parentOf(child)).toBe(base);
    expect((await maker.layers(child, req)).map((l) => names(l.digest))).toEqual([['a'], ['x', 'y']]);
  });
});
