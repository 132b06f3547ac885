import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, linkSync, renameSync, lstatSync, lutimesSync, mkdtempSync, mkdirSync, readFileSync, readdirSync, readlinkSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ContextDiffError, CONTEXT_DIFF_MAGIC, decodeContextManifest, encodeContextManifest, packContextDiff, readContextDiff } from '@kiln/common';
import { treeContentDigest } from '../ops/content-digest.js';
import { walkDirectory } from '../testing/fake-session.js';
import { reasonOf } from '../ops/op-failure.js';
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

/** A copy of `from` at `to` with owners, modes, times and links (what the snapshot prepared on a copy holds). */
function copyTree(from: string, to: string): void {
  execFileSync('cp', ['-a', `${from}/.`, to]);
}

/**
 * `n` files in `0fill/` (sorted ahead of every other entry, so with n past
 * the receive's first 64 files everything after them goes through the file
 * pool's threads), with a mix of modes, owners, mtimes, bodies and a hard link.
 */
function fill(src: string, n: number): void {
  if (n === 0) return;
  mkdirSync(path.join(src, '0fill'));
  for (let i = 0; i < n; i++) {
    const f = path.join(src, '0fill', `f${String(i).padStart(4, '0')}`);
    writeFileSync(f, i % 3 === 0 ? '' : `body ${i}`);
    if (i % 7 === 0) chmodSync(f, 0o600);
    if (i % 11 === 0) chownSync(f, 1000 + i, 2000 + i);
    if (i % 13 === 0) chmodSync(f, 0o4755);
    if (i % 5 === 0) utimesSync(f, new Date(1_600_000_000_000 + i), new Date(1_600_000_000_000 + i * 1000));
  }
  linkSync(path.join(src, '0fill/f0005'), path.join(src, '0fill/hardlink'));
}

function makeContextWith(filler = 0): string {
  const src = tmp('src');
  fill(src, filler);
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

/** Every entry below `root` with type, mode, owner, mtime (ms), size and link target, by path. */
function describeTree(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string) => {
    for (const name of readdirSync(path.join(root, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const st = lstatSync(path.join(root, r));
      const link = st.isSymbolicLink() ? ` -> ${readlinkSync(path.join(root, r))}` : '';
      out[r] = `${(st.mode & 0o170000).toString(8)} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid} ${Math.round(st.mtimeMs)} ${st.isFile() ? st.size : 0}${link}`;
      if (st.isDirectory()) walk(r);
    }
  };
  walk('');
  return out;
}

// Once with every file written on the receiving thread, once with 150 files ahead of the
// test's own, so those go to the file pool's threads (PooledWrites in local-diff-apply.ts).
describe.each([
  ['on one thread', 0],
  ['through the file pool', 150],
])('context diff (%s)', (_, filler) => {
  const makeContext = () => makeContextWith(filler);
  const fillerBytes = Array.from({ length: filler }, (_, i) => (i % 3 === 0 ? 0 : `body ${i}`.length)).reduce((a, b) => a + b, 0);
  const fillerEntries = filler > 0 ? filler + 2 : 0; // the files, the hard link and 0fill itself

  it('a first transfer sends everything and its manifest digest equals a walk of the tree', async () => {
    const src = makeContext();
    const root = tmp('root');
    const res = await transfer(src, root, new Map(), { seeded: false });
    expect(res.sent.changed).toBe(11 + fillerEntries);
    expect(res.contentBytes).toBe(3 + 7 + 70_000 + 4 + 1 + fillerBytes + (filler > 5 ? 'body 5'.length : 0));
    expect(describeTree(root)).toEqual(describeTree(src));
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
    if (seeded) copyTree(first, root);
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
    if (seeded) copyTree(first, root);
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

  it('the received tree has the modes, owners, mtimes, links and empty dirs of the source (each mode a creation cannot give: umask bits, setuid, sticky)', async () => {
    const src = tmp('src');
    fill(src, filler);
    mkdirSync(path.join(src, 'empty/deeper'), { recursive: true });
    mkdirSync(path.join(src, 'd'));
    const files: [string, number, number, number][] = [
      ['d/a644', 0o644, 0, 0],
      ['d/b666', 0o666, 0, 0],
      ['d/c700', 0o700, 0, 0],
      ['d/d4755', 0o4755, 0, 0],
      ['d/e1777', 0o1777, 0, 0],
      ['d/f000', 0o000, 0, 0],
      ['d/g-owned', 0o640, 1234, 5678],
      ['d/h-after-owned', 0o644, 0, 0],
      ['top777', 0o777, 42, 42],
    ];
    for (const [rel, mode, uid, gid] of files) {
      writeFileSync(path.join(src, rel), rel);
      chownSync(path.join(src, rel), uid, gid);
      chmodSync(path.join(src, rel), mode);
    }
    // A setgid directory owned by another group: files created in it are born with its group.
    mkdirSync(path.join(src, 'sgid'));
    chownSync(path.join(src, 'sgid'), 0, 4321);
    chmodSync(path.join(src, 'sgid'), 0o2775);
    writeFileSync(path.join(src, 'sgid/root-owned'), 'x');
    chownSync(path.join(src, 'sgid/root-owned'), 0, 0);
    writeFileSync(path.join(src, 'sgid/empty'), '');
    chownSync(path.join(src, 'sgid/empty'), 0, 0);
    symlinkSync('../d/a644', path.join(src, 'empty/link'));
    chmodSync(path.join(src, 'empty/deeper'), 0o711);
    const when = new Date('2021-03-04T05:06:07.089Z');
    for (const rel of [...files.map((f) => f[0]), 'sgid/root-owned', 'sgid/empty', 'empty/deeper', 'sgid', 'd', 'empty']) utimesSync(path.join(src, rel), when, when);
    lutimesSync(path.join(src, 'empty/link'), when, when);
    utimesSync(path.join(src, 'empty'), when, when);
    const root = tmp('root');
    const res = await transfer(src, root, new Map(), { seeded: false });
    expect(describeTree(root)).toEqual(describeTree(src));
    expect(lstatSync(path.join(root, 'sgid/root-owned')).gid).toBe(0);
    expect(manifestContentDigest(res.manifest)).toBe(treeContentDigest(src));
  });

  it('an incremental sync applies deletes, mode and owner changes, and replaces a symlink planted at a file\'s name without following it', async () => {
    const src = makeContext();
    // The copy the next transfer is seeded on (the snapshot prepared on it holds the same tree).
    const root = tmp('seeded');
    const { manifest } = await transfer(src, root, new Map(), { seeded: false });
    const outside = tmp('outside');
    writeFileSync(path.join(outside, 'victim'), 'keep');
    // Planted in the seeded copy: the name the next transfer writes is a link out of the tree.
    rmSync(path.join(root, 'a/two.txt'));
    symlinkSync(path.join(outside, 'victim'), path.join(root, 'a/two.txt'));
    writeFileSync(path.join(src, 'a/two.txt'), 'changed');
    chmodSync(path.join(src, 'a/two.txt'), 0o600);
    chownSync(path.join(src, 'a/b/one.txt'), 7, 8);
    rmSync(path.join(src, 'gonedir'), { recursive: true });
    rmSync(path.join(src, 'gone.txt'));
    mkdirSync(path.join(src, 'newempty'));
    const res = await transfer(src, root, manifest, { seeded: true });
    expect(readFileSync(path.join(outside, 'victim'), 'utf8')).toBe('keep');
    expect(lstatSync(path.join(root, 'a/two.txt')).isFile()).toBe(true);
    expect(describeTree(root)).toEqual(describeTree(src));
    expect(manifestContentDigest(res.manifest)).toBe(treeContentDigest(src));
  });

  it('an incremental sync rewriting every file replaces symlinks planted at their names without following them', async () => {
    const src = makeContext();
    const root = tmp('seeded');
    const { manifest } = await transfer(src, root, new Map(), { seeded: false });
    const outside = tmp('outside');
    writeFileSync(path.join(outside, 'victim'), 'keep');
    const names = ['a/two.txt', ...(filler > 0 ? ['0fill/f0001', '0fill/f0120'] : [])];
    for (const rel of names) {
      rmSync(path.join(root, rel));
      symlinkSync(path.join(outside, 'victim'), path.join(root, rel));
    }
    for (let i = 0; i < filler; i++) writeFileSync(path.join(src, '0fill', `f${String(i).padStart(4, '0')}`), `changed ${i}`);
    writeFileSync(path.join(src, 'a/two.txt'), 'changed');
    const res = await transfer(src, root, manifest, { seeded: true });
    expect(readFileSync(path.join(outside, 'victim'), 'utf8')).toBe('keep');
    for (const rel of names) expect(lstatSync(path.join(root, rel)).isFile()).toBe(true);
    expect(describeTree(root)).toEqual(describeTree(src));
    expect(manifestContentDigest(res.manifest)).toBe(treeContentDigest(src));
  });

  it('a rename (as many paths gone as new) is sent as a deletion and a new entry', async () => {
    const src = makeContext();
    const root = tmp('seeded');
    const { manifest } = await transfer(src, root, new Map(), { seeded: false });
    renameSync(path.join(src, 'gone.txt'), path.join(src, 'renamed.txt'));
    const res = await transfer(src, root, manifest, { seeded: true });
    expect(res.sent.deleted).toBe(1);
    expect(res.manifest.has('gone.txt')).toBe(false);
    expect(readFileSync(path.join(root, 'renamed.txt'), 'utf8')).toBe('gone');
    expect(manifestContentDigest(res.manifest)).toBe(treeContentDigest(src));
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

  it('a path sent twice is replaced, not written through: the second copy of a link cannot redirect a file', async () => {
    const root = tmp('r');
    const outside = tmp('outside');
    writeFileSync(path.join(outside, 'victim'), 'keep');
    const link = { p: 'f', t: 'l', m: 511, u: 0, g: 0, s: 0, mt: 0, l: path.join(outside, 'victim') };
    const file = { p: 'f', t: 'f', m: 420, u: 0, g: 0, s: 3, mt: 0 };
    const res = await apply(root, CONTEXT_DIFF_MAGIC, `${JSON.stringify(link)}\n`, `${JSON.stringify(file)}\n`, 'new', '{"end":1,"n":2}\n');
    expect(readFileSync(path.join(outside, 'victim'), 'utf8')).toBe('keep');
    expect(readFileSync(path.join(root, 'f'), 'utf8')).toBe('new');
    expect(res.manifest.get('f')?.type).toBe('file');
  });

  /** `n` empty files `DIR/f00`... as diff lines (past 64 of them, the rest go to the file pool). */
  const files = (dir: string, n: number) => Array.from({ length: n }, (_, i) => `${JSON.stringify({ p: `${dir}/f${String(i).padStart(2, '0')}`, t: 'f', m: 420, u: 0, g: 0, s: 0, mt: 0 })}\n`);
  const dirLine = (p: string) => `${JSON.stringify({ p, t: 'd', m: 493, u: 0, g: 0, s: 0, mt: 0 })}\n`;

  it('a pooled file sent again as a link and then as a file is replaced each time, never written through', async () => {
    const root = tmp('r');
    const outside = tmp('outside');
    writeFileSync(path.join(outside, 'victim'), 'keep');
    const link = { p: 'd/f79', t: 'l', m: 511, u: 0, g: 0, s: 0, mt: 0, l: path.join(outside, 'victim') };
    const file = { p: 'd/f79', t: 'f', m: 420, u: 0, g: 0, s: 3, mt: 0 };
    const res = await apply(root, CONTEXT_DIFF_MAGIC, dirLine('d'), ...files('d', 80), `${JSON.stringify(link)}\n`, `${JSON.stringify(file)}\n`, 'new', '{"end":1,"n":83}\n');
    expect(readFileSync(path.join(outside, 'victim'), 'utf8')).toBe('keep');
    expect(readFileSync(path.join(root, 'd/f79'), 'utf8')).toBe('new');
    expect(readdirSync(path.join(root, 'd')).length).toBe(80);
    expect(res.manifest.get('d/f79')?.type).toBe('file');
  });

  it('a directory of pooled files deleted and sent again as a link: the files are in before the delete, nothing lands through the link', async () => {
    const root = tmp('r');
    const outside = tmp('outside');
    const link = { p: 'd', t: 'l', m: 511, u: 0, g: 0, s: 0, mt: 0, l: outside };
    const res = await apply(root, CONTEXT_DIFF_MAGIC, dirLine('d'), ...files('d', 200), '{"p":"d","d":1}\n', `${JSON.stringify(link)}\n`, '{"end":1,"n":203}\n');
    expect(readdirSync(outside)).toEqual([]);
    expect(lstatSync(path.join(root, 'd')).isSymbolicLink()).toBe(true);
    expect([...res.manifest.keys()]).toEqual(['d']);
  });

  it('a pooled file that cannot be created fails the transfer with its errno, no host path', async () => {
    const root = tmp('r');
    // The 82nd entry goes to the pool; its name is longer than the kernel allows (NAME_MAX).
    const long = { p: `d/${'x'.repeat(300)}`, t: 'f', m: 420, u: 0, g: 0, s: 0, mt: 0 };
    const err = await apply(root, CONTEXT_DIFF_MAGIC, dirLine('d'), ...files('d', 80), `${JSON.stringify(long)}\n`, '{"end":1,"n":82}\n').catch((e: unknown) => e as Error);
    expect(err).toBeInstanceOf(Error);
    expect((err as NodeJS.ErrnoException).code).toBe('ENAMETOOLONG');
    expect(reasonOf(err)).not.toContain(root);
  });

  it('refuses a truncated stream and a wrong change count', async () => {
    const file = JSON.stringify({ p: 'f', t: 'f', m: 420, u: 0, g: 0, s: 10, mt: 0 });
    await expect(apply(tmp('r'), CONTEXT_DIFF_MAGIC, `${file}\n`, 'abc')).rejects.toThrow(/ended inside f/);
    await expect(apply(tmp('r'), CONTEXT_DIFF_MAGIC, '{"end":1,"n":3}\n')).rejects.toThrow(/announced 3 changes/);
    await expect(apply(tmp('r'), CONTEXT_DIFF_MAGIC)).rejects.toThrow(/ended early/);
  });
});
