import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readPathsXattrs, readTreeXattrs } from './xattrs.js';

function setXattr(p: string, name: string, value: string, noDeref = false): void {
  execFileSync('setfattr', [...(noDeref ? ['-h'] : []), '-n', name, '-v', value, p]);
}

/** Reads with system calls, then with getfattr (KILN_XATTR_SYSCALLS=0). */
async function both<T>(read: () => Promise<T>): Promise<[T, T]> {
  const saved = process.env.KILN_XATTR_SYSCALLS;
  try {
    delete process.env.KILN_XATTR_SYSCALLS;
    const native = await read();
    process.env.KILN_XATTR_SYSCALLS = '0';
    return [native, await read()];
  } finally {
    if (saved === undefined) delete process.env.KILN_XATTR_SYSCALLS;
    else process.env.KILN_XATTR_SYSCALLS = saved;
  }
}

describe('readTreeXattrs / readPathsXattrs: system calls and getfattr agree', () => {
  let root: string;
  beforeEach(() => {
    root = mkdtempSync(path.join(tmpdir(), 'kiln-xattrs-'));
    mkdirSync(path.join(root, 'dir/sub'), { recursive: true });
    writeFileSync(path.join(root, 'dir/sub/file'), 'x');
    writeFileSync(path.join(root, 'dir/spa ce ü'), 'y');
    writeFileSync(path.join(root, 'bare'), 'z');
    symlinkSync('/etc', path.join(root, 'link'));
    setXattr(path.join(root, 'dir/sub/file'), 'user.a', '0x00ff0a3d');
    setXattr(path.join(root, 'dir/sub/file'), 'user.text', 'hello');
    setXattr(path.join(root, 'dir/spa ce ü'), 'user.b', '"q"');
    // Never carried in a layer: dropped by both.
    setXattr(path.join(root, 'dir'), 'trusted.overlay.opaque', 'y');
    setXattr(path.join(root, 'dir/sub'), 'trusted.kept', 'k');
    setXattr(path.join(root, 'link'), 'trusted.link', 'l', true);
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it('reads the same tree', async () => {
    const [native, getfattr] = await both(() => readTreeXattrs(root));
    expect(native).toEqual(getfattr);
    expect([...native.keys()].sort()).toEqual(['dir/spa ce ü', 'dir/sub', 'dir/sub/file', 'link']);
    expect(native.get('dir/sub/file')).toEqual({ 'user.a': Buffer.from([0, 255, 10, 61]), 'user.text': Buffer.from('hello') });
  });

  it('reads the same paths, and both reject a missing one', async () => {
    const rels = ['dir', 'dir/sub', 'dir/spa ce ü', 'bare', 'link'];
    const [native, getfattr] = await both(() => readPathsXattrs(root, rels));
    expect(native).toEqual(getfattr);
    expect([...native.keys()].sort()).toEqual(['dir/spa ce ü', 'dir/sub', 'link']);
    const [a, b] = await both(() => readPathsXattrs(root, ['bare', 'gone']).then(() => 'read', (err: Error) => err.message));
    expect(a).toMatch(/gone: No such file or directory/);
    expect(b).toMatch(/gone: No such file or directory/);
  });
});
