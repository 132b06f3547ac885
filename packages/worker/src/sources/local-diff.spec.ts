import { cpSync, mkdtempSync, mkdirSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ContextDiffError, CONTEXT_DIFF_MAGIC, decodeContextManifest, encodeContextManifest, packContextDiff, readContextDiff } from '@kiln/common';
import { treeContentDigest } from '../ops/content-digest.js';
import { walkDirectory } from '../testing/fake-session.js';
import { applyContextDiff, manifestContentDigest, sortedPaths, type ContextManifest } from './local-diff-apply.js';

const dirs: string[] = [];
const tmp = (what: string) => {
  const d = mkdtempSync(path.join(tmpdir(), `kiln-diff-${what}-`));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const c of chunks) parts.push(c);
  return Buffer.concat(parts);
}

async function* once(b: Uint8Array, size = 7): AsyncGenerator<Uint8Array> {
  // Odd chunk sizes: records and bodies straddle chunk boundaries.
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size);
}

/** Sends `src` against `base` (through the manifest codec, as on the wire) and applies it. */
async function transfer(src: string, root: string, base: ContextManifest, mode: { seeded: boolean; baseRoot?: string }) {
  let sent = { changed: 0, deleted: 0, contentBytes: 0 };
  const wireBase = decodeContextManifest(encodeContextManifest(base.values()));
  const stream = await collect(packContextDiff(src, walkDirectory(src), wireBase, { onDone: (s) => (sent = s) }));
  const res = await applyContextDiff({ root, base, ...mode, changes: readContextDiff(once(stream)) });
  return { ...res, sent, streamBytes: stream.length };
}

function makeContext(): string {
  const src = tmp('src');
  mkdirSync(path.join(src, 'a/b'), { recursive: true });
  mkdirSync(path.join(src, 'a-c'));
  writeFileSync(path.join(src, 'a/b/one.txt'), 'one');
  writeFileSync(path.join(src, 'a/two.txt'), 'two two');
  writeFileSync(path.join(src, 'a-c/three'), Buffer.alloc(70_000, 3));
  writeFileSync(path.join(src, 'gone.txt'), 'gone');
  mkdirSync(path.join(src, 'gonedir/sub'), { recursive: true });
  writeFileSync(path.join(src, 'gonedir/sub/x'), 'x');
  symlinkSync('a/two.txt', path.join(src, 'link'));
  return src;
}

describe('context diff', () => {
  it('a first transfer sends everything and its manifest digest equals a walk of the tree', async () => {
    const src = makeContext();
    const root = tmp('root');
    const res = await transfer(src, root, new Map(), { seeded: false });
    expect(res.sent.changed).toBe(11);
    expect(res.contentBytes).toBe(3 + 7 + 70_000 + 4 + 1);
    expect(manifestContentDigest(res.manifest)).toBe(treeContentDigest(root));
    expect(treeContentDigest(root)).toBe(treeContentDigest(src));
    expect(readFileSync(path.join(root, 'a-c/three'))).toEqual(Buffer.alloc(70_000, 3));
  });

  it.each([
    ['on the previous copy (seeded)', true],
    ['into a fresh tree copying the previous one', false],
  ])('a second transfer %s sends only changes and deletions', async (_, seeded) => {
    const src = makeContext();
    const first = tmp('first');
    const { manifest } = await transfer(src, first, new Map(), { seeded: false });
    writeFileSync(path.join(src, 'a/b/one.txt'), 'ONE!');
    writeFileSync(path.join(src, 'a/new.txt'), 'new');
    rmSync(path.join(src, 'gone.txt'));
    rmSync(path.join(src, 'gonedir'), { recursive: true });
    const root = seeded ? tmp('seeded') : tmp('fresh');
    if (seeded) cpSync(first, root, { recursive: true, preserveTimestamps: true, verbatimSymlinks: true });
    const res = await transfer(src, root, manifest, { seeded, baseRoot: seeded ? undefined : first });
    // one.txt and new.txt, plus the dirs whose mtime moved (a, a/b, and the root is never sent).
    expect(res.sent.contentBytes).toBe(4 + 3);
    expect(res.sent.deleted).toBe(2); // gone.txt and gonedir (not its children)
    expect(res.streamBytes).toBeLessThan(2000);
    expect(treeContentDigest(root)).toBe(treeContentDigest(src));
    expect(manifestContentDigest(res.manifest)).toBe(treeContentDigest(src));
    expect([...res.manifest.keys()].some((k) => k.startsWith('gonedir'))).toBe(false);
  });

  it.each([
    ['seeded', true],
    ['fresh', false],
  ])('a directory that became a file and a file that became a directory (%s)', async (_, seeded) => {
    const src = makeContext();
    const first = tmp('first');
    const { manifest } = await transfer(src, first, new Map(), { seeded: false });
    rmSync(path.join(src, 'a/b'), { recursive: true });
    writeFileSync(path.join(src, 'a/b'), 'now a file');
    rmSync(path.join(src, 'gone.txt'));
    mkdirSync(path.join(src, 'gone.txt/deeper'), { recursive: true });
    writeFileSync(path.join(src, 'gone.txt/deeper/f'), 'f');
    const root = seeded ? tmp('seeded') : tmp('fresh');
    if (seeded) cpSync(first, root, { recursive: true, preserveTimestamps: true, verbatimSymlinks: true });
    const res = await transfer(src, root, manifest, { seeded, baseRoot: seeded ? undefined : first });
    expect(res.manifest.has('a/b/one.txt')).toBe(false);
    expect(res.manifest.get('a/b')?.type).toBe('file');
    expect(res.manifest.get('gone.txt/deeper/f')?.type).toBe('file');
    expect(treeContentDigest(root)).toBe(treeContentDigest(src));
    expect(manifestContentDigest(res.manifest)).toBe(treeContentDigest(src));
  });

  it('touching a file resends it but leaves the content digest alone', async () => {
    const src = makeContext();
    const first = tmp('first');
    const { manifest } = await transfer(src, first, new Map(), { seeded: false });
    const later = new Date(Date.now() + 60_000);
    utimesSync(path.join(src, 'a/two.txt'), later, later);
    const res = await transfer(src, first, manifest, { seeded: true });
    expect(res.sent).toEqual({ changed: 1, deleted: 0, contentBytes: 7 });
    expect(manifestContentDigest(res.manifest)).toBe(manifestContentDigest(manifest));
    expect(Math.round(res.manifest.get('a/two.txt')!.mtimeMs)).toBe(later.getTime());
  });

  it('nothing changed: an empty diff', async () => {
    const src = makeContext();
    const first = tmp('first');
    const { manifest } = await transfer(src, first, new Map(), { seeded: false });
    const res = await transfer(src, first, manifest, { seeded: true });
    expect(res.sent).toEqual({ changed: 0, deleted: 0, contentBytes: 0 });
    expect(res.streamBytes).toBe(CONTEXT_DIFF_MAGIC.length + '{"end":1,"n":0}\n'.length);
  });

  it('orders paths as a sorted walk does', () => {
    expect(sortedPaths(['a-c', 'a/b', 'a', 'a/b/c', 'b'])).toEqual(['a', 'a/b', 'a/b/c', 'a-c', 'b']);
  });
});

describe('context diff: hostile or broken streams', () => {
  const enc = (...lines: string[]) => once(Buffer.from(lines.join('')));
  const apply = (root: string, ...lines: string[]) =>
    applyContextDiff({ root, base: new Map(), seeded: false, changes: readContextDiff(enc(...lines)) });

  it('refuses a stream without the magic line', async () => {
    await expect(apply(tmp('r'), 'hello\n')).rejects.toThrow(ContextDiffError);
  });

  it('refuses paths that are not clean and relative', async () => {
    for (const p of ['../x', '/etc/passwd', 'a/../../x', 'a//b', '.']) {
      await expect(apply(tmp('r'), CONTEXT_DIFF_MAGIC, `${JSON.stringify({ p, t: 'f', m: 420, u: 0, g: 0, s: 0, mt: 0 })}\n`, '{"end":1,"n":1}\n')).rejects.toThrow(/invalid path/);
    }
  });

  it('refuses an entry below a symlink, so a link cannot redirect writes', async () => {
    const root = tmp('r');
    const outside = tmp('outside');
    const link = { p: 'l', t: 'l', m: 511, u: 0, g: 0, s: 0, mt: 0, l: outside };
    const file = { p: 'l/evil', t: 'f', m: 420, u: 0, g: 0, s: 1, mt: 0 };
    await expect(apply(root, CONTEXT_DIFF_MAGIC, `${JSON.stringify(link)}\n`, `${JSON.stringify(file)}\n`, 'x', '{"end":1,"n":2}\n')).rejects.toThrow(/no parent directory/);
    expect(() => readFileSync(path.join(outside, 'evil'))).toThrow();
  });

  it('refuses a truncated stream and a wrong change count', async () => {
    const file = JSON.stringify({ p: 'f', t: 'f', m: 420, u: 0, g: 0, s: 10, mt: 0 });
    await expect(apply(tmp('r'), CONTEXT_DIFF_MAGIC, `${file}\n`, 'abc')).rejects.toThrow(/ended inside f/);
    await expect(apply(tmp('r'), CONTEXT_DIFF_MAGIC, '{"end":1,"n":3}\n')).rejects.toThrow(/announced 3 changes/);
    await expect(apply(tmp('r'), CONTEXT_DIFF_MAGIC)).rejects.toThrow(/ended early/);
  });
});
