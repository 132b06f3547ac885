import { execFileSync } from 'node:child_process';
import { chmod, chown, link, mkdir, mkdtemp, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mountsBelow } from '../testing/contract.js';
import type { Snapshotter } from '../snapshotter.js';
import { createOverlaySnapshotter } from '../overlay/overlay-snapshotter.js';
import { comparedPaths, layerTarChunks, planTreeDiff, type TreeDiffOptions } from './tree-diff.js';
import { readPathsXattrs, readTreeXattrs } from './xattrs.js';

/** Whole seconds, so unchanged-looking files get their contents compared. */
const T = new Date('2024-01-02T03:04:05Z');

function tarOf(parent: string, child: string, opts: TreeDiffOptions): Buffer {
  return Buffer.concat([...layerTarChunks(planTreeDiff(parent, child, opts))]);
}

/** GNU tar's listing (type+mode, owner, name). */
function gnuList(tar: Buffer): string[] {
  if (tar.length === 0) return [];
  const out = execFileSync('tar', ['--numeric-owner', '-tvf', '-'], { input: tar }).toString('utf8');
  return out
    .trim()
    .split('\n')
    .map((l) => l.split(/\s+/))
    .map((f) => `${f[0]} ${f[1]} ${f.slice(5).join(' ')}`);
}

describe('tree diff over the changes of an overlay snapshot', () => {
  let root: string;
  let s: Snapshotter | undefined;
  beforeEach(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'kiln-chdiff-'));
  });
  afterEach(async () => {
    await s?.close();
    s = undefined;
    expect(mountsBelow(root)).toEqual([]);
    await rm(root, { recursive: true, force: true });
  });

  /** A parent tree: nested dirs, whole-second mtimes, hardlinks, a symlink, xattrs. */
  async function fillBase(dir: string): Promise<void> {
    for (const d of ['etc/conf.d', 'gone/deep', 'usr/bin', 'opaque/sub', 'same/inner', 'typed']) await mkdir(path.join(dir, d), { recursive: true });
    const files: Record<string, string> = {
      'etc/hosts': 'hosts',
      'etc/conf.d/a': 'a',
      'gone/deep/x': 'x',
      'usr/bin/tool': 'tool',
      'usr/bin/keep': 'keep',
      'opaque/sub/f': 'f',
      'opaque/g': 'g',
      'same/inner/h': 'h',
      'typed/file': 'file',
      old: 'old',
    };
    for (const [p, body] of Object.entries(files)) await writeFile(path.join(dir, p), body);
    await link(path.join(dir, 'usr/bin/tool'), path.join(dir, 'usr/bin/tool-link'));
    await symlink('/usr/bin/tool', path.join(dir, 'usr/bin/alias'));
    execFileSync('setfattr', ['-n', 'user.kiln', '-v', 'blue', path.join(dir, 'etc/hosts')]);
    execFileSync('setfattr', ['-n', 'user.kiln', '-v', 'red', path.join(dir, 'usr/bin/keep')]);
    const all = [...Object.keys(files), 'usr/bin/tool-link', 'etc/conf.d', 'gone/deep', 'usr/bin', 'opaque/sub', 'same/inner', 'etc', 'gone', 'usr', 'opaque', 'same', 'typed'];
    for (const p of all) await utimes(path.join(dir, p), T, T);
  }

  /** The layer as the layer maker makes it from the changes dir, and as a full double walk makes it. */
  async function bothWays(parent: string, child: string): Promise<{ restricted: Buffer; full: Buffer }> {
    const p = await s!.view(parent);
    const c = await s!.view(child);
    const ch = await s!.changes!(child);
    try {
      expect(ch?.parent).toBe(parent);
      const compared = comparedPaths(p.path, c.path, ch!.path);
      const restricted = tarOf(p.path, c.path, {
        changesDir: ch!.path,
        parentXattrs: await readPathsXattrs(p.path, compared),
        childXattrs: await readTreeXattrs(ch!.path),
      });
      const full = tarOf(p.path, c.path, { parentXattrs: await readTreeXattrs(p.path), childXattrs: await readTreeXattrs(c.path) });
      return { restricted, full };
    } finally {
      await ch?.release();
      await c.release();
      await p.release();
    }
  }

  it('gives the same layer bytes as the double walk: edits, deletions, opaque dirs, type changes, xattrs, copy-ups that change nothing', async () => {
    s = createOverlaySnapshotter({ root: path.join(root, 'snap') });
    const a = await s.prepare('a');
    await fillBase(a.path);
    const base = await s.commit('a');

    const b = await s.prepare('b', base);
    const at = (p: string) => path.join(b.path, p);
    await writeFile(at('etc/hosts'), 'hosts2'); // modified (copy-up)
    await writeFile(at('usr/bin/new'), 'new'); // added, with a hardlink
    await link(at('usr/bin/new'), at('usr/bin/new-link'));
    await rm(at('old')); // deleted file: whiteout
    await rm(at('gone'), { recursive: true }); // deleted dir
    await rm(at('opaque'), { recursive: true }); // removed and made again: an opaque dir
    await mkdir(at('opaque/sub'), { recursive: true });
    await writeFile(at('opaque/sub/f'), 'f');
    await utimes(at('opaque/sub/f'), T, T);
    await rm(at('typed/file'));
    await mkdir(at('typed/file')); // file -> dir
    await chmod(at('etc/conf.d/a'), 0o600);
    await chown(at('usr/bin/tool'), 1000, 1001); // a hardlinked file copied up
    execFileSync('setfattr', ['-n', 'user.kiln', '-v', 'green', at('usr/bin/keep')]); // only an xattr changed
    await utimes(at('usr/bin/keep'), T, T);
    await chown(at('same/inner/h'), 0, 0); // copied up, nothing changed: in neither layer
    await utimes(at('same/inner/h'), T, T);
    for (const d of ['same/inner', 'same']) await utimes(at(d), T, T);
    const child = await s.commit('b');

    const { restricted, full } = await bothWays(base, child);
    expect(restricted.equals(full)).toBe(true);
    const names = gnuList(restricted).map((l) => l.split(' ').slice(2).join(' '));
    expect(names).toEqual(
      expect.arrayContaining(['.wh.gone', '.wh.old', 'etc/hosts', 'usr/bin/new', 'opaque/.wh.g', 'typed/file/', 'usr/bin/keep', 'usr/bin/tool', 'etc/conf.d/a']),
    );
    expect(names.some((n) => n.startsWith('same/inner/h'))).toBe(false);
    expect(names.some((n) => n.startsWith('gone/'))).toBe(false);

    // A child that changed nothing: empty either way.
    await s.prepare('c', child);
    const unchanged = await s.commit('c');
    const none = await bothWays(child, unchanged);
    expect(none.restricted.length).toBe(0);
    expect(none.full.length).toBe(0);
  });

  it('walks only what changed: a tree of many files with one new file costs a handful of stats', async () => {
    s = createOverlaySnapshotter({ root: path.join(root, 'snap') });
    const a = await s.prepare('a');
    for (let d = 0; d < 20; d++) {
      await mkdir(path.join(a.path, `src/d${d}`), { recursive: true });
      for (let f = 0; f < 50; f++) await writeFile(path.join(a.path, `src/d${d}/f${f}`), `${d}/${f}`);
    }
    const base = await s.commit('a');
    const b = await s.prepare('b', base);
    await writeFile(path.join(b.path, 'count.txt'), '1000\n');
    const child = await s.commit('b');
    const p = await s.view(base);
    const c = await s.view(child);
    const ch = await s.changes!(child);
    try {
      expect(comparedPaths(p.path, c.path, ch!.path)).toEqual([]);
      const plan = planTreeDiff(p.path, c.path, { changesDir: ch!.path });
      expect(plan.entries).toBe(1);
      expect(gnuList(Buffer.concat([...layerTarChunks(plan)])).map((l) => l.split(' ').at(-1))).toEqual(['count.txt']);
    } finally {
      await ch?.release();
      await c.release();
      await p.release();
    }
  });

  it('compares only the names the changes dir holds (a plain-dir stand-in whose other differences it never sees)', async () => {
    const parent = path.join(root, 'p');
    const child = path.join(root, 'c');
    const changes = path.join(root, 'u');
    for (const d of [parent, child]) {
      await mkdir(path.join(d, 'dir'), { recursive: true });
      await writeFile(path.join(d, 'dir/seen'), d === parent ? 'a' : 'bb');
      await writeFile(path.join(d, 'unseen'), d === parent ? 'a' : 'bb');
    }
    await mkdir(path.join(changes, 'dir'), { recursive: true });
    await writeFile(path.join(changes, 'dir/seen'), '');
    const names = (opts: TreeDiffOptions) => gnuList(tarOf(parent, child, opts)).map((l) => l.split(' ').at(-1));
    expect(names({})).toEqual(['dir/', 'dir/seen', 'unseen']);
    expect(names({ changesDir: changes })).toEqual(['dir/', 'dir/seen']);
  });
});
