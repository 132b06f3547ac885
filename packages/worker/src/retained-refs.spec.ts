import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '@kiln/common';
import { FileChain, local, State } from '@kiln/llb';
import { createDirectorySnapshotter } from '@kiln/snapshotter';
import { openRetainedRefs } from './retained-refs.js';
import { createFakeSession, FakeExecutor, readTar, solve } from './testing/index.js';
import { createWorker, type Worker } from './worker.js';

describe('ref retention and local content digests', () => {
  let root: string;
  let ctx: string;
  const session = () => createFakeSession({ context: { dir: ctx } });
  const open = (s = session()): Worker =>
    createWorker({
      id: 'w',
      backend: 'oci',
      snapshotter: createDirectorySnapshotter({ root: path.join(root, 'snapshots') }),
      executor: new FakeExecutor(),
      sessions: s.client,
      publish: async () => undefined,
      logger: silentLogger(),
      retainedRefs: openRetainedRefs(path.join(root, 'retained.db')),
    });

  beforeEach(() => {
    root = mkdtempSync(path.join(tmpdir(), 'kiln-retain-'));
    ctx = mkdtempSync(path.join(tmpdir(), 'kiln-retain-ctx-'));
    writeFileSync(path.join(ctx, 'a.txt'), 'a\n');
    writeFileSync(path.join(ctx, 'b.txt'), 'b\n');
  });
  afterEach(() => {
    rmSync(root, { recursive: true, force: true });
    rmSync(ctx, { recursive: true, force: true });
  });

  async function contentDigest(w: Worker, include: string[]): Promise<string> {
    const { bytes, digest } = local('context', { includePatterns: include }).output!.vertex.marshal();
    const res = await w.run({ buildId: 'b', sessionId: 's', vertexDigest: digest, op: bytes, inputRefs: [] });
    await w.release(res.outputRefs);
    expect(res.contentDigests).toHaveLength(1);
    return res.contentDigests![0]!;
  }

  it('digests what a local source received: mtimes and unread files do not count, contents do', async () => {
    const w = open();
    try {
      const first = await contentDigest(w, ['a.txt']);
      expect(first).toMatch(/^sha256:[0-9a-f]{64}$/);
      utimesSync(path.join(ctx, 'a.txt'), 1_000, 1_000);
      writeFileSync(path.join(ctx, 'b.txt'), 'changed, but not read\n');
      expect(await contentDigest(w, ['a.txt'])).toBe(first);
      writeFileSync(path.join(ctx, 'a.txt'), 'A\n');
      expect(await contentDigest(w, ['a.txt'])).not.toBe(first);
    } finally {
      await w.close();
    }
  });

  it('after a crash, the next worker on the root removes every snapshot no persisted retention holds', async () => {
    const file = (name: string) => FileChain.start().mkfile(`/${name}`, 0o644, new TextEncoder().encode(name)).apply(State.scratch());
    const crashed = open();
    const kept = (await solve(crashed, file('kept')))!;
    await crashed.retain([kept], 'cache');
    const ephemeral = (await solve(crashed, file('ephemeral')))!;
    await crashed.retain([ephemeral], 'build-1', { ephemeral: true });
    await solve(crashed, file('held-in-memory'));
    // No close(): the process "died" holding three refs.
    const snapshots = createDirectorySnapshotter({ root: path.join(root, 'snapshots') });
    const before = await snapshots.list();
    await snapshots.close();
    expect(before.filter((s) => s.kind === 'committed')).toHaveLength(3);

    const inspect = createDirectorySnapshotter({ root: path.join(root, 'snapshots') });
    const next = createWorker({
      id: 'w',
      backend: 'oci',
      snapshotter: inspect,
      executor: new FakeExecutor(),
      sessions: session().client,
      publish: async () => undefined,
      logger: silentLogger(),
      retainedRefs: openRetainedRefs(path.join(root, 'retained.db')),
    });
    try {
      // Ops wait for the sweep, so after one the root holds the retained snapshot and this op's output only.
      const fresh = (await solve(next, file('fresh')))!;
      const committed = (await inspect.list()).filter((s) => s.kind === 'committed');
      expect(committed).toHaveLength(2);
      expect((await next.refUsage([kept, fresh])).map((u) => u.found)).toEqual([true, true]);
      expect((await readTar(next.exportRef(kept))).map((e) => e.name)).toEqual(['kept']);
    } finally {
      await next.close();
    }
  });

  it('keeps a persistently retained ref and its snapshot across a restart until dropped', async () => {
    const state = FileChain.start().mkfile('/kept.txt', 0o644, new TextEncoder().encode('kept\n')).apply(State.scratch());
    let w = open();
    const ref = (await solve(w, state))!;
    expect(await w.retain([ref, 'ref-unknown'], 'cache')).toEqual({ missing: ['ref-unknown'] });
    expect(await w.retain([ref], 'cache')).toEqual({ missing: [] });
    await w.release([ref]); // the build's reference goes; the retention stays
    await w.close();

    w = open();
    try {
      const [usage] = await w.refUsage([ref]);
      expect(usage).toMatchObject({ ref, found: true, owners: ['cache'] });
      expect(usage!.sizeBytes).toBe(5);
      const chunks: Uint8Array[] = [];
      for await (const c of w.exportRef(ref)) chunks.push(c);
      expect(Buffer.concat(chunks).includes(Buffer.from('kept\n'))).toBe(true);

      // An ephemeral retention holds it for the process only.
      await w.retain([ref], 'build-1', { ephemeral: true });
      await w.drop([ref], 'cache');
      expect((await w.refUsage([ref]))[0]).toMatchObject({ found: true, owners: ['build-1'] });
      await w.drop([ref], 'build-1');
      expect((await w.refUsage([ref]))[0]).toMatchObject({ found: false, owners: [] });
      expect(await w.retain([ref], 'cache')).toEqual({ missing: [ref] });
    } finally {
      await w.close();
    }
    const after = open();
    try {
      expect((await after.refUsage([ref]))[0]!.found).toBe(false);
    } finally {
      await after.close();
    }
  });
});
