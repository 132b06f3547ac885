import { lstat, mkdtemp, readFile, readlink, rm, stat, symlink, writeFile, mkdir, chown } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { KilnError } from '@kiln/common';
import { createDirectorySnapshotter } from './directory-snapshotter.js';

describe('directory snapshotter', () => {
  let root: string;
  beforeEach(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'kiln-snap-'));
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('prepares, commits, views and seeds children from the parent', async () => {
    const s = createDirectorySnapshotter({ root });
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
    expect((await s.usage(id)).sizeBytes).toBe(5);
    expect((await s.list()).map((i) => i.name)).toEqual([id, id2]);
  });

  it('keeps committed ids across reopen and drops leftover active snapshots', async () => {
    const s1 = createDirectorySnapshotter({ root });
    const a = await s1.prepare('a');
    await writeFile(path.join(a.path, 'f'), 'x');
    const id = await s1.commit('a');
    await s1.prepare('left-active');
    await s1.close();

    const s2 = createDirectorySnapshotter({ root });
    expect(await s2.list()).toEqual([expect.objectContaining({ kind: 'committed', name: id })]);
    const v = await s2.view(id);
    expect(await readFile(path.join(v.path, 'f'), 'utf8')).toBe('x');
  });

  it('rejects duplicate keys and unknown parents; remove is idempotent', async () => {
    const s = createDirectorySnapshotter({ root });
    await s.prepare('k');
    await expect(s.prepare('k')).rejects.toMatchObject({ code: 'already_exists' });
    await expect(s.prepare('x', 'nope')).rejects.toBeInstanceOf(KilnError);
    await expect(s.commit('nope')).rejects.toMatchObject({ code: 'not_found' });
    await s.remove('k');
    await s.remove('k');
    await s.prepare('k');
  });

  it('defers deleting a removed snapshot until its views are released', async () => {
    const s = createDirectorySnapshotter({ root });
    const a = await s.prepare('a');
    await writeFile(path.join(a.path, 'f'), 'x');
    const id = await s.commit('a');
    const v = await s.view(id);
    await s.remove(id);
    expect(await readFile(path.join(v.path, 'f'), 'utf8')).toBe('x');
    await expect(s.view(id)).rejects.toMatchObject({ code: 'not_found' });
    await v.release();
    await expect(stat(v.path)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await s.list()).toEqual([]);
  });
});
