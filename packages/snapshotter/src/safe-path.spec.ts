import { mkdir, mkdtemp, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { cleanRootPath, resolveInRoot } from './safe-path.js';

describe('resolveInRoot', () => {
  let root: string;
  let outside: string;
  const follow = { followFinalSymlink: true };
  const nofollow = { followFinalSymlink: false };

  beforeEach(async () => {
    const base = await realpath(await mkdtemp(path.join(tmpdir(), 'kiln-safe-path-')));
    root = path.join(base, 'root');
    outside = base;
    await mkdir(path.join(root, 'etc'), { recursive: true });
    await writeFile(path.join(root, 'etc/passwd'), 'inside');
    await writeFile(path.join(base, 'secret'), 'outside');
  });
  afterEach(async () => {
    await rm(outside, { recursive: true, force: true });
  });

  it('resolves plain, relative and absolute paths under the root', async () => {
    expect(await resolveInRoot(root, '/etc/passwd', follow)).toBe(path.join(root, 'etc/passwd'));
    expect(await resolveInRoot(root, 'etc/./passwd', follow)).toBe(path.join(root, 'etc/passwd'));
    expect(await resolveInRoot(root, '/', follow)).toBe(root);
    expect(await resolveInRoot(root, '', follow)).toBe(root);
    expect(await resolveInRoot(root, 'missing/dir/file', follow)).toBe(path.join(root, 'missing/dir/file'));
  });

  it('never climbs above the root with ..', async () => {
    expect(await resolveInRoot(root, '../secret', follow)).toBe(path.join(root, 'secret'));
    expect(await resolveInRoot(root, '/../../../../etc/passwd', follow)).toBe(path.join(root, 'etc/passwd'));
    expect(await resolveInRoot(root, 'etc/../../secret', follow)).toBe(path.join(root, 'secret'));
  });

  it('re-roots an absolute symlink to /', async () => {
    await symlink('/', path.join(root, 'l'));
    expect(await resolveInRoot(root, 'l/etc/passwd', follow)).toBe(path.join(root, 'etc/passwd'));
    expect(await resolveInRoot(root, 'l', follow)).toBe(root);
    expect(await resolveInRoot(root, 'l', nofollow)).toBe(path.join(root, 'l'));
  });

  it('re-roots a symlink to an absolute host path', async () => {
    await symlink(path.join(outside, 'secret'), path.join(root, 'abs'));
    const p = await resolveInRoot(root, 'abs', follow);
    expect(p.startsWith(root + path.sep)).toBe(true);
    expect(p).toBe(path.join(root, outside, 'secret'));
  });

  it('keeps relative symlinks with .. inside the root', async () => {
    await symlink('../../../../secret', path.join(root, 'etc/up'));
    expect(await resolveInRoot(root, 'etc/up', follow)).toBe(path.join(root, 'secret'));
    await symlink('../..', path.join(root, 'etc/updir'));
    expect(await resolveInRoot(root, 'etc/updir/secret', follow)).toBe(path.join(root, 'secret'));
  });

  it('follows symlink chains and resolves .. after a symlink from its target', async () => {
    await mkdir(path.join(root, 'a/b'), { recursive: true });
    await symlink('a/b', path.join(root, 'c'));
    await symlink('/c', path.join(root, 'd'));
    await symlink('d', path.join(root, 'e'));
    expect(await resolveInRoot(root, 'e/x', follow)).toBe(path.join(root, 'a/b/x'));
    // "c/.." is "a" (the parent of the target), not the root.
    expect(await resolveInRoot(root, 'c/../f', follow)).toBe(path.join(root, 'a/f'));
  });

  it('returns the link itself for a final symlink without following', async () => {
    await symlink('/etc', path.join(root, 'link'));
    expect(await resolveInRoot(root, 'link', nofollow)).toBe(path.join(root, 'link'));
    expect(await resolveInRoot(root, 'link/', nofollow)).toBe(path.join(root, 'link'));
    expect(await resolveInRoot(root, 'link/passwd', nofollow)).toBe(path.join(root, 'etc/passwd'));
  });

  it('fails with ELOOP on symlink loops', async () => {
    await symlink('loop2', path.join(root, 'loop1'));
    await symlink('/loop1', path.join(root, 'loop2'));
    await expect(resolveInRoot(root, 'loop1/x', follow)).rejects.toMatchObject({ code: 'ELOOP' });
  });

  it('cleans root paths', () => {
    expect(cleanRootPath('a/../b/')).toBe('/b');
    expect(cleanRootPath('../../x')).toBe('/x');
    expect(cleanRootPath('/')).toBe('/');
    expect(cleanRootPath('')).toBe('/');
  });
});
