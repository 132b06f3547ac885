import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, realpathSync, renameSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { atFd, mkdirAllInRoot, readFileInRoot, removeEmptyInRoot, walkInRoot } from './in-root.js';

describe('fd-based operations inside a root', () => {
  let base: string;
  let root: string;
  let outside: string;

  beforeEach(async () => {
    base = realpathSync(await mkdtemp(path.join(tmpdir(), 'kiln-in-root-')));
    root = path.join(base, 'root');
    outside = path.join(base, 'host');
    mkdirSync(path.join(root, 'etc'), { recursive: true });
    writeFileSync(path.join(root, 'etc/passwd'), 'inside');
    // The host tree an attacker aims at, shaped like the stub paths.
    mkdirSync(path.join(outside, 'etc/d'), { recursive: true });
    writeFileSync(path.join(outside, 'etc/f'), '');
    writeFileSync(path.join(outside, 'passwd'), 'outside');
  });
  afterEach(() => rmSync(base, { recursive: true, force: true }));

  describe('removeEmptyInRoot', () => {
    it('removes an empty file or directory and keeps anything with content', () => {
      mkdirSync(path.join(root, 'x/empty'), { recursive: true });
      writeFileSync(path.join(root, 'x/stub'), '');
      writeFileSync(path.join(root, 'x/data'), 'keep');
      expect(removeEmptyInRoot(root, '/x/empty')).toBe(true);
      expect(removeEmptyInRoot(root, '/x/stub')).toBe(true);
      expect(removeEmptyInRoot(root, '/x/data')).toBe(false);
      expect(removeEmptyInRoot(root, '/x')).toBe(false);
      expect(removeEmptyInRoot(root, '/x/missing')).toBe(false);
      expect(removeEmptyInRoot(root, '/')).toBe(false);
      expect(existsSync(path.join(root, 'x/empty'))).toBe(false);
      expect(existsSync(path.join(root, 'x/stub'))).toBe(false);
      expect(readFileSync(path.join(root, 'x/data'), 'utf8')).toBe('keep');
    });

    it('leaves the host alone when a parent was swapped for a symlink to it (CVE-2024-23652 class)', () => {
      symlinkSync(outside, path.join(root, 'x'));
      expect(removeEmptyInRoot(root, '/x/etc/f')).toBe(false);
      expect(removeEmptyInRoot(root, '/x/etc/d')).toBe(false);
      expect(removeEmptyInRoot(root, '/x/etc')).toBe(false);
      // A relative symlink climbing out is refused the same way.
      symlinkSync('../../host', path.join(root, 'etc/up'));
      expect(removeEmptyInRoot(root, '/etc/up/etc/f')).toBe(false);
      expect(lstatSync(path.join(outside, 'etc/f')).isFile()).toBe(true);
      expect(lstatSync(path.join(outside, 'etc/d')).isDirectory()).toBe(true);
    });

    it('keeps a stub that was itself replaced by a symlink, and the symlink', () => {
      symlinkSync(path.join(outside, 'etc/d'), path.join(root, 'stub'));
      expect(removeEmptyInRoot(root, '/stub')).toBe(false);
      expect(lstatSync(path.join(root, 'stub')).isSymbolicLink()).toBe(true);
      expect(lstatSync(path.join(outside, 'etc/d')).isDirectory()).toBe(true);
    });
  });

  describe('walkInRoot', () => {
    it('holds the directories it walked: a rename + symlink swap afterwards cannot redirect it', () => {
      mkdirSync(path.join(root, 'a/b'), { recursive: true });
      writeFileSync(path.join(root, 'a/b/f'), '');
      const walk = walkInRoot(root, '/a/b/f', { symlinks: 'refuse', followFinal: false });
      try {
        renameSync(path.join(root, 'a'), path.join(root, 'a.old'));
        symlinkSync(outside, path.join(root, 'a'));
        mkdirSync(path.join(outside, 'b'));
        writeFileSync(path.join(outside, 'b/f'), 'host');
        unlinkSync(atFd(walk.parent, walk.name!));
      } finally {
        walk.close();
      }
      expect(existsSync(path.join(root, 'a.old/b/f'))).toBe(false);
      expect(readFileSync(path.join(outside, 'b/f'), 'utf8')).toBe('host');
    });

    it('refuses symlinks anywhere with symlinks: refuse, and missing parents without mkdir', () => {
      symlinkSync('/etc', path.join(root, 'l'));
      expect(() => walkInRoot(root, '/l/passwd', { symlinks: 'refuse', followFinal: false })).toThrow(expect.objectContaining({ code: 'ELOOP' }));
      expect(() => walkInRoot(root, '/l', { symlinks: 'refuse', followFinal: true })).toThrow(expect.objectContaining({ code: 'ELOOP' }));
      walkInRoot(root, '/l', { symlinks: 'refuse', followFinal: false }).close();
      expect(() => walkInRoot(root, '/no/such', { symlinks: 'follow', followFinal: true })).toThrow(expect.objectContaining({ code: 'ENOENT' }));
      expect(() => walkInRoot(root, '/etc/passwd/x', { symlinks: 'follow', followFinal: true })).toThrow(expect.objectContaining({ code: 'ENOTDIR' }));
    });

    it('gives up on symlink loops', () => {
      symlinkSync('/loop', path.join(root, 'loop'));
      expect(() => walkInRoot(root, '/loop/x', { symlinks: 'follow', followFinal: true })).toThrow(expect.objectContaining({ code: 'ELOOP' }));
    });
  });

  describe('readFileInRoot', () => {
    it('reads through symlinks re-rooted: absolute and climbing ones stay inside', () => {
      expect(readFileInRoot(root, '/etc/passwd').toString()).toBe('inside');
      symlinkSync(path.join(outside, 'passwd'), path.join(root, 'etc/abs'));
      expect(() => readFileInRoot(root, '/etc/abs')).toThrow(expect.objectContaining({ code: 'ENOENT' }));
      symlinkSync('../../../../../../passwd', path.join(root, 'etc/rel'));
      expect(() => readFileInRoot(root, '/etc/rel')).toThrow(expect.objectContaining({ code: 'ENOENT' }));
      symlinkSync('/etc/passwd', path.join(root, 'etc/inside'));
      expect(readFileInRoot(root, '/etc/inside').toString()).toBe('inside');
      expect(readFileInRoot(root, '/../../etc/passwd').toString()).toBe('inside');
    });

    it('fails at once on a FIFO or a directory instead of blocking', () => {
      execFileSync('mkfifo', [path.join(root, 'etc/fifo')]);
      expect(() => readFileInRoot(root, '/etc/fifo')).toThrow(expect.objectContaining({ code: 'EINVAL' }));
      expect(() => readFileInRoot(root, '/etc')).toThrow(expect.objectContaining({ code: 'EISDIR' }));
      expect(() => readFileInRoot(root, '/')).toThrow(expect.objectContaining({ code: 'EISDIR' }));
    });
  });

  describe('mkdirAllInRoot', () => {
    it('creates missing directories with the given attributes and returns the host path', () => {
      const made = mkdirAllInRoot(root, '/a/b/c', { mode: 0o750, uid: 12, gid: 34, mtimeMs: 1_000_000 });
      expect(made).toBe(path.join(root, 'a/b/c'));
      for (const d of ['a', 'a/b', 'a/b/c']) {
        const st = statSync(path.join(root, d));
        expect([st.mode & 0o7777, st.uid, st.gid]).toEqual([0o750, 12, 34]);
      }
      // (A parent's mtime moves again when its child is made.)
      expect(statSync(path.join(root, 'a/b/c')).mtimeMs).toBe(1_000_000);
      // Existing directories are left as they are.
      expect(mkdirAllInRoot(root, '/etc', { mode: 0o700 })).toBe(path.join(root, 'etc'));
      expect(statSync(path.join(root, 'etc')).mode & 0o777).not.toBe(0o700);
      expect(mkdirAllInRoot(root, '/')).toBe(root);
    });

    it('creates the target of a dangling symlink inside the root, never on the host', () => {
      const target = path.join(outside, 'made');
      symlinkSync(target, path.join(root, 'w'));
      expect(mkdirAllInRoot(root, '/w/sub')).toBe(path.join(root, target, 'sub'));
      expect(existsSync(target)).toBe(false);
      symlinkSync(outside, path.join(root, 'v'));
      expect(mkdirAllInRoot(root, '/v/etc/d')).toBe(path.join(root, outside, 'etc/d'));
    });

    it('fails with ENOTDIR on a file in the way', () => {
      expect(() => mkdirAllInRoot(root, '/etc/passwd/x')).toThrow(expect.objectContaining({ code: 'ENOTDIR' }));
      expect(() => mkdirAllInRoot(root, '/etc/passwd')).toThrow(expect.objectContaining({ code: 'ENOTDIR' }));
    });
  });
});
