import { readFileSync } from 'node:fs';
import { chown, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, symlink, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { KilnError } from '@kiln/common';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Snapshotter } from '../snapshotter.js';

/** Makes a snapshotter over `root`; the suite closes it. */
export type SnapshotterFactory = (root: string) => Snapshotter;

/** Mount points below `dir` in this process's mount namespace. */
export function mountsBelow(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((mp) => mp.startsWith(dir + '/'));
}

/**
 * The Snapshotter contract (see snapshotter.ts), run against one backend:
 * every backend must pass it unchanged. Needs root (ownership).
 */
export function runSnapshotterContract(name: string, make: SnapshotterFactory): void {
  describe(`snapshotter contract: ${name}`, () => {
    let root: string;
    const open: Snapshotter[] = [];
    const create = (): Snapshotter => {
      const s = make(root);
      open.push(s);
      return s;
    };
    beforeEach(async () => {
      root = await mkdtemp(path.join(tmpdir(), 'kiln-snap-'));
    });
    afterEach(async () => {
      for (const s of open.splice(0)) await s.close();
      expect(mountsBelow(root)).toEqual([]);
      await rm(root, { recursive: true, force: true });
    });

    it('prepares, commits, views and seeds children from the parent', async () => {
      const s = create();
      const a = await s.prepare('a');
      await mkdir(path.join(a.path, 'dir'), { mode: 0o700 });
      await writeFile(path.join(a.path, 'dir/f'), 'hello', { mode: 0o640 });
      await chown(path.join(a.path, 'dir/f'), 1234, 5678);
      await symlink('/dir/f', path.join(a.path, 'link'));
      const id = await s.commit('a');

      const b = await s.prepare('b', id);
      expect(await readFile(path.join(b.path, 'dir/f'), 'utf8')).toBe('hello');
      const st = await stat(path.join(b.path, 'dir/f'));
      expect(st.mode & 0o7777).toBe(0o640);
      expect([st.uid, st.gid]).toEqual([1234, 5678]);
      expect((await lstat(path.join(b.path, 'dir'))).mode & 0o7777).toBe(0o700);
      expect(await readlink(path.join(b.path, 'link'))).toBe('/dir/f');
      await writeFile(path.join(b.path, 'dir/f'), 'changed');
      const id2 = await s.commit('b');
      expect(id2).not.toBe(id);

      const v = await s.view(id);
      expect(await readFile(path.join(v.path, 'dir/f'), 'utf8')).toBe('hello');
      await v.release();
      const v2 = await s.view(id2);
      expect(await readFile(path.join(v2.path, 'dir/f'), 'utf8')).toBe('changed');
      await v2.release();
      expect((await s.usage(id)).sizeBytes).toBe(5);
      expect((await s.list()).map((i) => i.name)).toEqual([id, id2]);
      expect((await s.list())[1]).toMatchObject({ kind: 'committed', parent: id });
    });

    it('hides deleted and replaced parent content in children, at any depth', async () => {
      const s = create();
      const a = await s.prepare('a');
      await mkdir(path.join(a.path, 'd/sub'), { recursive: true });
      await writeFile(path.join(a.path, 'd/sub/x'), 'x');
      await writeFile(path.join(a.path, 'gone'), 'g');
      await writeFile(path.join(a.path, 'kept'), 'k');
      let parent = await s.commit('a');

      const b = await s.prepare('b', parent);
      await unlink(path.join(b.path, 'gone'));
      await rm(path.join(b.path, 'd'), { recursive: true });
      await mkdir(path.join(b.path, 'd'));
      await writeFile(path.join(b.path, 'd/new'), 'n');
      parent = await s.commit('b');
      for (let i = 0; i < 3; i++) {
        const c = await s.prepare(`c${i}`, parent);
        await writeFile(path.join(c.path, `f${i}`), String(i));
        parent = await s.commit(`c${i}`);
      }
      const v = await s.view(parent);
      expect((await readdir(v.path)).sort()).toEqual(['d', 'f0', 'f1', 'f2', 'kept']);
      expect(await readdir(path.join(v.path, 'd'))).toEqual(['new']);
      await v.release();
    });

    it('keeps committed ids and labels across reopen and drops leftover active snapshots', async () => {
      const s1 = create();
      const a = await s1.prepare('a');
      await writeFile(path.join(a.path, 'f'), 'x');
      const id = await s1.commit('a', { label: 'layer:1' });
      const b = await s1.prepare('child', id);
      await writeFile(path.join(b.path, 'g'), 'y');
      const id2 = await s1.commit('child');
      await s1.prepare('left-active');
      await s1.prepare('left-active-child', id2);
      await s1.close();

      const s2 = create();
      expect(await s2.list()).toEqual([
        expect.objectContaining({ kind: 'committed', name: id, label: 'layer:1' }),
        expect.objectContaining({ kind: 'committed', name: id2, parent: id }),
      ]);
      expect(await s2.byLabel('layer:1')).toBe(id);
      expect(await s2.byLabel('layer:2')).toBeUndefined();
      const v = await s2.view(id2);
      expect(await readFile(path.join(v.path, 'f'), 'utf8')).toBe('x');
      expect(await readFile(path.join(v.path, 'g'), 'utf8')).toBe('y');
      await v.release();
      await s2.prepare('left-active');
    });

    it('rejects duplicate keys, unknown parents and taken labels; remove is idempotent', async () => {
      const s = create();
      await s.prepare('k');
      await expect(s.prepare('k')).rejects.toMatchObject({ code: 'already_exists' });
      await expect(s.prepare('x', 'nope')).rejects.toBeInstanceOf(KilnError);
      await expect(s.commit('nope')).rejects.toMatchObject({ code: 'not_found' });
      await expect(s.view('nope')).rejects.toMatchObject({ code: 'not_found' });
      await s.commit('k', { label: 'L' });
      await s.prepare('k2');
      await expect(s.commit('k2', { label: 'L' })).rejects.toMatchObject({ code: 'already_exists' });
      await s.remove('k2');
      await s.remove('k2');
      await s.prepare('k2');
      expect((await s.list()).map((i) => i.kind)).toEqual(['committed', 'active']);
    });

    it('defers deleting a removed snapshot until its views are released', async () => {
      const s = create();
      const a = await s.prepare('a');
      await writeFile(path.join(a.path, 'f'), 'x');
      const id = await s.commit('a', { label: 'L' });
      const v = await s.view(id);
      await s.remove(id);
      expect(await readFile(path.join(v.path, 'f'), 'utf8')).toBe('x');
      await expect(s.view(id)).rejects.toMatchObject({ code: 'not_found' });
      expect(await s.byLabel('L')).toBeUndefined();
      await v.release();
      await expect(stat(v.path)).rejects.toMatchObject({ code: 'ENOENT' });
      expect(await s.list()).toEqual([]);
    });

    it('keeps a removed parent readable through its children until the last one goes', async () => {
      const s = create();
      const a = await s.prepare('a');
      await writeFile(path.join(a.path, 'base'), 'b');
      const pa = await s.commit('a');
      const b = await s.prepare('b', pa);
      await writeFile(path.join(b.path, 'mid'), 'm');
      const pb = await s.commit('b');
      const c = await s.prepare('c', pb);
      await s.remove(pa);
      await s.remove(pb);
      expect((await s.list()).map((i) => i.name)).toEqual(['c']);
      await writeFile(path.join(c.path, 'top'), 't');
      const pc = await s.commit('c');
      const v = await s.view(pc);
      expect((await readdir(v.path)).sort()).toEqual(['base', 'mid', 'top']);
      await v.release();
      await s.remove(pc);
      expect(await s.list()).toEqual([]);
    });

    it('runs prepares of different keys concurrently', async () => {
      const s = create();
      const a = await s.prepare('a');
      await writeFile(path.join(a.path, 'f'), 'x');
      const id = await s.commit('a');
      const ids = await Promise.all(
        Array.from({ length: 8 }, async (_, i) => {
          const act = await s.prepare(`k${i}`, id);
          await writeFile(path.join(act.path, 'i'), String(i));
          return s.commit(`k${i}`);
        }),
      );
      for (const [i, cid] of ids.entries()) {
        const v = await s.view(cid);
        expect(await readFile(path.join(v.path, 'i'), 'utf8')).toBe(String(i));
        expect(await readFile(path.join(v.path, 'f'), 'utf8')).toBe('x');
        await v.release();
      }
    });
  });
}
