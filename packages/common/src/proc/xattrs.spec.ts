import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readXattrPaths, readXattrTree } from './xattrs.js';

function setXattr(p: string, name: string, value: Buffer, opts: { noDeref?: boolean } = {}): void {
  execFileSync('setfattr', [...(opts.noDeref ? ['-h'] : []), '-n', name, '-v', `0x${value.toString('hex')}`, p]);
}

describe('xattrs by system calls', () => {
  let root: string;
  let outside: string;
  const saved = process.env.KILN_XATTR_SYSCALLS;
  beforeEach(() => {
    delete process.env.KILN_XATTR_SYSCALLS;
    root = mkdtempSync(path.join(tmpdir(), 'kiln-xattr-'));
    outside = mkdtempSync(path.join(tmpdir(), 'kiln-xattr-out-'));
  });
  afterEach(() => {
    rmSync(root, { recursive: true, force: true });
    rmSync(outside, { recursive: true, force: true });
    if (saved === undefined) delete process.env.KILN_XATTR_SYSCALLS;
    else process.env.KILN_XATTR_SYSCALLS = saved;
  });

  it('reads every entry under the root, raw values, without following symlinks', async () => {
    mkdirSync(path.join(root, 'a/b'), { recursive: true });
    writeFileSync(path.join(root, 'a/b/f'), 'x');
    writeFileSync(path.join(root, 'plain'), 'y');
    const binary = Buffer.from([0, 1, 2, 255, 10, 61]);
    setXattr(path.join(root, 'a/b/f'), 'user.bin', binary);
    setXattr(path.join(root, 'a/b/f'), 'user.empty', Buffer.alloc(0));
    setXattr(path.join(root, 'a'), 'trusted.dir', Buffer.from('d'));
    setXattr(root, 'user.root', Buffer.from('r')); // the root itself is left out
    // A symlink to a directory whose entries carry attributes: neither followed nor descended.
    writeFileSync(path.join(outside, 'secret'), 's');
    setXattr(path.join(outside, 'secret'), 'user.outside', Buffer.from('o'));
    setXattr(outside, 'user.outside-dir', Buffer.from('o'));
    symlinkSync(outside, path.join(root, 'link'));
    setXattr(path.join(root, 'link'), 'trusted.own', Buffer.from('l'), { noDeref: true });

    const map = await readXattrTree(root);
    expect(map).not.toBeNull();
    expect([...map!.keys()].sort()).toEqual(['a', 'a/b/f', 'link']);
    expect(map!.get('a/b/f')).toEqual({ 'user.bin': binary, 'user.empty': Buffer.alloc(0) });
    expect(map!.get('a')).toEqual({ 'trusted.dir': Buffer.from('d') });
    expect(map!.get('link')).toEqual({ 'trusted.own': Buffer.from('l') });
  });

  it('reads only the given entries, and rejects naming a missing one', async () => {
    mkdirSync(path.join(root, 'd'));
    writeFileSync(path.join(root, 'd/inner'), 'x');
    setXattr(path.join(root, 'd'), 'user.d', Buffer.from('1'));
    setXattr(path.join(root, 'd/inner'), 'user.inner', Buffer.from('2'));
    const map = await readXattrPaths(root, ['d', '']);
    expect([...map!.entries()]).toEqual([['d', { 'user.d': Buffer.from('1') }]]);
    expect(await readXattrPaths(root, [])).toEqual(new Map());
    await expect(readXattrPaths(root, ['d', 'gone'])).rejects.toThrow(`llistxattr ${root}/gone: No such file or directory`);
  });

  it('rejects a tree it cannot walk, and answers null when turned off', async () => {
    await expect(readXattrTree(path.join(root, 'nope'))).rejects.toThrow(/ENOENT/);
    process.env.KILN_XATTR_SYSCALLS = '0';
    expect(await readXattrTree(root)).toBeNull();
    expect(await readXattrPaths(root, ['x'])).toBeNull();
  });
});
