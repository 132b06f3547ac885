import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { create } from '@bufbuild/protobuf';
import { llb } from '@kiln/api';
import { silentLogger } from '@kiln/common';
import { digestOf, marshalOp } from '@kiln/llb';
import { createDirectorySnapshotter } from '@kiln/snapshotter';
import { afterEach, describe, expect, it } from 'vitest';
import { createEventCollector, createFakeSession, FakeExecutor } from '../testing/index.js';
import { createWorker, type Worker } from '../worker.js';
import { ChecksumCache, selectorChecksum, type PathSelector } from './path-checksum.js';

const dirs: string[] = [];
const tmp = (what: string) => {
  const d = mkdtempSync(path.join(tmpdir(), `kiln-checksum-${what}-`));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const sel = (p: string, o: Partial<PathSelector> = {}): PathSelector => ({ path: p, wildcard: false, followSymlink: false, ...o });

function tree(): string {
  const root = tmp('tree');
  mkdirSync(path.join(root, 'src/sub'), { recursive: true });
  writeFileSync(path.join(root, 'a.txt'), 'a');
  writeFileSync(path.join(root, 'b.txt'), 'b');
  writeFileSync(path.join(root, 'src/one.go'), 'one');
  writeFileSync(path.join(root, 'src/sub/two.go'), 'two');
  symlinkSync('a.txt', path.join(root, 'link'));
  return root;
}

describe('selectorChecksum', () => {
  it('ignores mtimes and files outside the selection; follows content, mode, names and link targets', async () => {
    const root = tree();
    const a = await selectorChecksum(root, sel('/a.txt'));
    const dir = await selectorChecksum(root, sel('/src'));
    utimesSync(path.join(root, 'a.txt'), 1_000, 1_000);
    utimesSync(path.join(root, 'src/sub/two.go'), 1_000, 1_000);
    writeFileSync(path.join(root, 'b.txt'), 'changed');
    expect(await selectorChecksum(root, sel('/a.txt'))).toBe(a);
    expect(await selectorChecksum(root, sel('/src'))).toBe(dir);

    writeFileSync(path.join(root, 'a.txt'), 'A');
    expect(await selectorChecksum(root, sel('/a.txt'))).not.toBe(a);
    chmodSync(path.join(root, 'src/sub/two.go'), 0o755);
    const moded = await selectorChecksum(root, sel('/src'));
    expect(moded).not.toBe(dir);
    writeFileSync(path.join(root, 'src/sub/three.go'), '');
    expect(await selectorChecksum(root, sel('/src'))).not.toBe(moded);
  });

  it('reads a final symlink as a link, or its target with followSymlink; a missing path is not an error', async () => {
    const root = tree();
    const asLink = await selectorChecksum(root, sel('/link'));
    const followed = await selectorChecksum(root, sel('/link', { followSymlink: true }));
    writeFileSync(path.join(root, 'a.txt'), 'new content');
    expect(await selectorChecksum(root, sel('/link'))).toBe(asLink);
    expect(await selectorChecksum(root, sel('/link', { followSymlink: true }))).not.toBe(followed);
    const missing = await selectorChecksum(root, sel('/nope'));
    expect(missing).toMatch(/^sha256:[0-9a-f]{64}$/);
    writeFileSync(path.join(root, 'nope'), '');
    expect(await selectorChecksum(root, sel('/nope'))).not.toBe(missing);
  });

  it('counts each wildcard match with its name, and nothing else', async () => {
    const root = tree();
    const glob = await selectorChecksum(root, sel('/src/*.go', { wildcard: true }));
    writeFileSync(path.join(root, 'src/sub/two.go'), 'changed below the match depth');
    writeFileSync(path.join(root, 'a.txt'), 'changed');
    expect(await selectorChecksum(root, sel('/src/*.go', { wildcard: true }))).toBe(glob);
    writeFileSync(path.join(root, 'src/new.go'), 'one');
    expect(await selectorChecksum(root, sel('/src/*.go', { wildcard: true }))).not.toBe(glob);
  });

  it('takes known file digests instead of reading the file', async () => {
    const root = tree();
    const read: string[] = [];
    const known = (rel: string) => {
      read.push(rel);
      return 'f'.repeat(64);
    };
    const viaKnown = await selectorChecksum(root, sel('/src'), known);
    expect(read.sort()).toEqual(['src/one.go', 'src/sub/two.go']);
    expect(viaKnown).not.toBe(await selectorChecksum(root, sel('/src')));
  });
});

describe('ChecksumCache', () => {
  it('computes once per snapshot and selector list, and forgets the least recently used', async () => {
    const cache = new ChecksumCache(2);
    let computed = 0;
    const compute = async () => `d${++computed}`;
    expect(await cache.get('s1', [sel('/a')], compute)).toBe('d1');
    expect(await cache.get('s1', [sel('/a')], compute)).toBe('d1');
    expect(await cache.get('s1', [sel('/a', { wildcard: true })], compute)).toBe('d2');
    expect(await cache.get('s2', [sel('/a')], compute)).toBe('d3');
    expect(await cache.get('s1', [sel('/a')], compute)).toBe('d4');
  });
});

describe('Worker.checksum', () => {
  let worker: Worker | undefined;
  afterEach(async () => {
    await worker?.close();
    worker = undefined;
  });

  it('checksums selected paths of a transferred context without reading them again, and of any ref', async () => {
    const ctx = tree();
    const fake = createFakeSession({ context: { dir: ctx, sharedKey: 'k1' } });
    worker = createWorker({
      id: 'w',
      backend: 'oci',
      snapshotter: createDirectorySnapshotter({ root: tmp('snap') }),
      executor: new FakeExecutor(),
      sessions: fake.client,
      publish: createEventCollector().publish,
      logger: silentLogger(),
    });
    const run = async (op: llb.Op, inputRefs: string[] = []) => {
      const bytes = marshalOp(op);
      return (await worker!.run({ buildId: 'b', sessionId: 's', vertexDigest: digestOf(bytes), op: bytes, inputRefs })).outputRefs[0]!;
    };
    const source = create(llb.OpSchema, { op: { case: 'source', value: { identifier: 'local://context' } } });
    const first = await run(source);
    const a1 = await worker.checksum(first, [sel('/a.txt')]);
    const src1 = await worker.checksum(first, [sel('/src')]);

    // A new transfer after b.txt changed and a.txt was touched: a.txt's checksum stays.
    writeFileSync(path.join(ctx, 'b.txt'), 'b2');
    utimesSync(path.join(ctx, 'a.txt'), 1_000, 1_000);
    const second = await run(source);
    expect(await worker.checksum(second, [sel('/a.txt')])).toBe(a1);
    expect(await worker.checksum(second, [sel('/b.txt')])).not.toBe(await worker.checksum(first, [sel('/b.txt')]));
    expect(await worker.checksum(second, [sel('/src')])).toBe(src1);

    // A copy into another ref checksums the same as its source.
    const copy = create(llb.OpSchema, {
      inputs: [{ digest: digestOf(marshalOp(source)), index: 0n }],
      op: { case: 'file', value: { actions: [{ input: -1n, secondaryInput: 0n, output: 0n, action: { case: 'copy', value: { src: '/src', dest: '/src', mode: -1, timestamp: -1n, createDestPath: true } } }] } },
    });
    const copied = await run(copy, [second]);
    expect(await worker.checksum(copied, [sel('/src')])).toBe(src1);
    await expect(worker.checksum('ref-unknown', [sel('/')])).rejects.toThrow(/unknown ref ref-unknown/);
    await worker.release([first, second, copied]);
  });
});
