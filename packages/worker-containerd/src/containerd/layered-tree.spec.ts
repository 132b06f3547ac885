import { execFileSync } from 'node:child_process';
import { lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileInRoot, resolveInRoot } from '@kiln/snapshotter';
import { LayeredTree, OpaqueDirCache } from './layered-tree.js';

/**
 * The layered reads against the kernel: the same layer dirs mounted as a
 * read-only overlay must show the same entries, the same resolved paths and
 * the same bytes, for whiteouts, opaque dirs, a dir over a file, and
 * symlinks (relative, absolute, climbing out of the root).
 */
describe('LayeredTree', () => {
  let dir: string;
  let layers: string[];
  let merged: string;
  let tree: LayeredTree;

  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'kiln-layered-'));
    const [top, mid, base] = (layers = ['top', 'mid', 'base'].map((n) => path.join(dir, n)));
    const file = (l: string, p: string, text = `${path.basename(l)}:${p}`) => {
      mkdirSync(path.dirname(path.join(l, p)), { recursive: true });
      writeFileSync(path.join(l, p), text);
    };
    const whiteout = (l: string, p: string) => {
      mkdirSync(path.dirname(path.join(l, p)), { recursive: true });
      execFileSync('mknod', [path.join(l, p), 'c', '0', '0']);
    };
    const link = (l: string, p: string, target: string) => {
      mkdirSync(path.dirname(path.join(l, p)), { recursive: true });
      symlinkSync(target, path.join(l, p));
    };
    const opaque = (l: string, p: string) => {
      mkdirSync(path.join(l, p), { recursive: true });
      execFileSync('setfattr', ['-n', 'trusted.overlay.opaque', '-v', 'y', path.join(l, p)]);
    };
    file(base!, 'etc/passwd', 'root:x:0:0::/root:/bin/sh\n');
    file(base!, 'etc/group', 'root:x:0:\n');
    file(base!, 'etc/hidden');
    file(base!, 'opq/old');
    file(base!, 'gone');
    file(base!, 'was-file');
    mkdirSync(path.join(base!, 'was-dir/sub'), { recursive: true });
    file(base!, 'deep/a/b/c');
    file(mid!, 'etc/group', 'wheel:x:10:root\n');
    whiteout(mid!, 'etc/hidden');
    opaque(mid!, 'opq');
    file(mid!, 'opq/new');
    whiteout(mid!, 'gone');
    mkdirSync(path.join(mid!, 'was-file'));
    file(mid!, 'was-file/inner');
    file(mid!, 'was-dir');
    link(mid!, 'abs', '/etc');
    link(mid!, 'rel', '../../etc/passwd');
    link(mid!, 'escape', '../../../../../../etc/shadow');
    link(mid!, 'loop', 'loop');
    file(top!, 'etc/motd');
    link(top!, 'deep/a/up', '../../etc');
    merged = path.join(dir, 'merged');
    mkdirSync(merged);
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `ro,lowerdir=${layers.join(':')}`, merged]);
    tree = new LayeredTree(layers, new OpaqueDirCache().isOpaque);
  });

  afterAll(() => {
    execFileSync('umount', [merged]);
    rmSync(dir, { recursive: true, force: true });
  });

  const paths = [
    '/',
    '/etc',
    '/etc/passwd',
    '/etc/group',
    '/etc/hidden',
    '/etc/motd',
    '/opq',
    '/opq/old',
    '/opq/new',
    '/gone',
    '/was-file',
    '/was-file/inner',
    '/was-dir',
    '/was-dir/sub',
    '/abs',
    '/abs/passwd',
    '/rel',
    '/escape',
    '/deep/a/b/c',
    '/deep/a/up/group',
    '/missing',
    '/missing/below',
    '/etc/passwd/below',
    '/../../etc/group',
  ];

  it.each(paths)('%s resolves as on the overlay mount', async (p) => {
    let host: { path: string; exists: boolean; isDirectory: boolean } | { error: string };
    try {
      const at = await resolveInRoot(merged, p, { followFinalSymlink: true });
      const st = (() => {
        try {
          return lstatSync(at);
        } catch {
          return undefined;
        }
      })();
      host = { path: `/${path.relative(merged, at)}`.replace(/\/$/, '') || '/', exists: st !== undefined, isDirectory: st?.isDirectory() ?? false };
    } catch (err) {
      host = { error: (err as NodeJS.ErrnoException).code ?? String(err) };
    }
    let layered: typeof host;
    try {
      const { path: at, entry } = await tree.lookup(p);
      layered = { path: at, exists: entry !== undefined, isDirectory: entry?.stats.isDirectory() ?? false };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? String(err);
      // A missing or non-directory parent: the host resolver names a path that lstat does not find.
      layered = code === 'ENOENT' || code === 'ENOTDIR' ? { path: (host as { path?: string }).path ?? '', exists: false, isDirectory: false } : { error: code };
    }
    expect(layered).toEqual(host);
  });

  it.each(['/etc/passwd', '/etc/group', '/opq/new', '/was-file/inner', '/rel', '/abs/passwd', '/deep/a/up/group'])('%s reads the same bytes as on the overlay mount', async (p) => {
    expect((await tree.readFile(p)).toString()).toBe(readFileInRoot(merged, p).toString());
  });

  it.each([
    ['/etc/hidden', 'ENOENT'],
    ['/opq/old', 'ENOENT'],
    ['/gone', 'ENOENT'],
    ['/escape', 'ENOENT'],
    ['/etc', 'EISDIR'],
    ['/loop', 'ELOOP'],
  ])('%s is not read (%s), as on the overlay mount', async (p, code) => {
    await expect(tree.readFile(p)).rejects.toMatchObject({ code });
    expect(() => readFileInRoot(merged, p)).toThrow(expect.objectContaining({ code }));
  });

  it('never reads a host file through a symlink climbing out of the root', async () => {
    // /escape points at ../../../../../../etc/shadow: inside the root that is /etc/shadow, which no layer has.
    await expect(tree.readFile('/escape')).rejects.toMatchObject({ code: 'ENOENT' });
    expect(lstatSync('/etc/shadow').isFile()).toBe(true);
  });
});
