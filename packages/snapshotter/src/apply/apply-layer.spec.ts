import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { encodeTarHeader, tarPadding, tarTrailer, type TarHeaderInit } from '@kiln/common';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createOverlaySnapshotter } from '../overlay/overlay-snapshotter.js';
import { mountsBelow } from '../testing/contract.js';
import { applyLayer } from './apply-layer.js';

type Entry = TarHeaderInit & { data?: string };

function tar(entries: Entry[]): Buffer {
  const parts: Buffer[] = [];
  for (const { data, ...h } of entries) {
    const body = Buffer.from(data ?? '');
    parts.push(encodeTarHeader({ ...h, size: body.length }), body, tarPadding(body.length));
  }
  parts.push(tarTrailer());
  return Buffer.concat(parts);
}

async function* chunks(b: Uint8Array, size = 1000): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size);
}

const sha = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Relative paths below `dir`, dirs with a trailing slash, sorted. */
function tree(dir: string, prefix = ''): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .flatMap((d) => {
      const rel = `${prefix}${d.name}`;
      return d.isDirectory() ? [`${rel}/`, ...tree(path.join(dir, d.name), `${rel}/`)] : [rel];
    })
    .sort();
}

describe('applyLayer', () => {
  let base: string;
  let root: string;
  let outside: string;
  beforeEach(() => {
    base = mkdtempSync(path.join(tmpdir(), 'kiln-apply-'));
    root = path.join(base, 'root');
    outside = path.join(base, 'outside');
    mkdirSync(root);
    mkdirSync(outside);
    writeFileSync(path.join(outside, 'keep'), 'keep');
  });
  afterEach(() => {
    expect(mountsBelow(base)).toEqual([]);
    rmSync(base, { recursive: true, force: true });
  });

  it('tells tar, gzip and zstd apart by their bytes and returns the diff id', async () => {
    const t = tar([{ name: 'a.txt', data: 'a' }]);
    const zst = execFileSync('zstd', ['-q', '-c'], { input: t });
    for (const [input, compression] of [
      [t, 'none'],
      [gzipSync(t), 'gzip'],
      [zst, 'zstd'],
    ] as const) {
      rmSync(path.join(root, 'a.txt'), { force: true });
      const res = await applyLayer(root, chunks(input, 3));
      expect(res).toMatchObject({ compression, diffId: sha(t), tarBytes: t.length, entries: 1 });
      expect(readFileSync(path.join(root, 'a.txt'), 'utf8')).toBe('a');
    }
  });

  it('fails on a corrupt zstd stream', async () => {
    const zst = execFileSync('zstd', ['-q', '-c'], { input: tar([{ name: 'a.txt', data: 'a'.repeat(10000) }]) });
    zst.writeUInt8(zst.readUInt8(20) ^ 0xff, 20);
    zst.writeUInt8(zst.readUInt8(zst.length - 8) ^ 0xff, zst.length - 8);
    await expect(applyLayer(root, chunks(zst))).rejects.toThrow(/zstd|tar/);
  });

  it('keeps hardlinks, symlinks, ownership, modes, mtimes, fifos, device nodes and xattrs', async () => {
    const src = path.join(base, 'src');
    mkdirSync(path.join(src, 'bin'), { recursive: true });
    writeFileSync(path.join(src, 'bin/busybox'), 'bb', { mode: 0o4755 });
    execFileSync('setfattr', ['-n', 'user.kiln', '-v', 'yes', path.join(src, 'bin/busybox')]);
    // A file capability (cap_net_bind_service=ep), binary in the pax record.
    execFileSync('setfattr', ['-n', 'security.capability', '-v', '0x0100000200040000000000000000000000000000', path.join(src, 'bin/busybox')]);
    const capBefore = execFileSync('getfattr', ['-e', 'hex', '-n', 'security.capability', path.join(src, 'bin/busybox')]).toString();
    const t = execFileSync('tar', ['--xattrs', '--xattrs-include=*', '-C', src, '-cf', '-', 'bin']);
    await applyLayer(root, chunks(t));
    expect(execFileSync('getfattr', ['--only-values', '-n', 'user.kiln', path.join(root, 'bin/busybox')]).toString()).toBe('yes');
    expect(execFileSync('getfattr', ['-e', 'hex', '-n', 'security.capability', path.join(root, 'bin/busybox')]).toString().split('\n')[1]).toBe(
      capBefore.split('\n')[1],
    );

    await applyLayer(
      root,
      chunks(
        tar([
          { name: 'etc/', type: 'directory', mode: 0o750, uid: 7, gid: 8, mtime: 1000 },
          { name: 'etc/passwd', data: 'root', mode: 0o600, uid: 1000, gid: 1001, mtime: 2000 },
          { name: 'etc/pw-link', type: 'link', linkname: 'etc/passwd' },
          { name: 'sh', type: 'symlink', linkname: '/bin/busybox', uid: 5, gid: 6 },
          { name: 'pipe', type: 'fifo', mode: 0o640 },
          { name: 'null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
        ]),
      ),
    );
    const pw = lstatSync(path.join(root, 'etc/passwd'));
    expect([pw.mode & 0o7777, pw.uid, pw.gid, pw.mtimeMs]).toEqual([0o600, 1000, 1001, 2_000_000]);
    expect(lstatSync(path.join(root, 'etc/pw-link')).ino).toBe(pw.ino);
    const etc = lstatSync(path.join(root, 'etc'));
    expect([etc.mode & 0o7777, etc.uid, etc.gid, etc.mtimeMs]).toEqual([0o750, 7, 8, 1_000_000]);
    expect(readlinkSync(path.join(root, 'sh'))).toBe('/bin/busybox');
    expect(lstatSync(path.join(root, 'sh')).uid).toBe(5);
    expect(lstatSync(path.join(root, 'pipe')).isFIFO()).toBe(true);
    const dev = lstatSync(path.join(root, 'null'));
    expect(dev.isCharacterDevice() && dev.rdev === 0x103 && (dev.mode & 0o777) === 0o666).toBe(true);
    expect(lstatSync(path.join(root, 'bin/busybox')).mode & 0o7777).toBe(0o4755);
  });

  it('never reads or writes outside the root, whatever the tar says', async () => {
    const hostile = tar([
      { name: '../escape-dotdot', data: 'x' },
      { name: '/abs-escape', data: 'x' },
      { name: 'a/../../../escape-deep', data: 'x' },
      { name: 'up', type: 'symlink', linkname: '../outside' },
      { name: 'up/planted', data: 'through a relative symlink' },
      { name: 'rootlink', type: 'symlink', linkname: '/' },
      { name: 'rootlink/outside/planted2', data: 'through an absolute symlink' },
      { name: 'c1', type: 'symlink', linkname: 'c2' },
      { name: 'c2', type: 'symlink', linkname: 'c3/../../..' },
      { name: 'c3/', type: 'directory' },
      { name: 'c1/outside/planted3', data: 'through a chain' },
      { name: 'up/.wh.keep' },
      { name: 'rootlink/../outside/.wh.keep' },
      { name: 'self', type: 'symlink', linkname: '.' },
      { name: 'self/../outside/keep', data: 'overwrite?' },
    ]);
    await applyLayer(root, chunks(hostile));
    expect(readdirSync(outside)).toEqual(['keep']);
    expect(readFileSync(path.join(outside, 'keep'), 'utf8')).toBe('keep');
    expect(readdirSync(base).sort()).toEqual(['outside', 'root']);
    // Everything landed inside, re-rooted.
    expect(readFileSync(path.join(root, 'escape-dotdot'), 'utf8')).toBe('x');
    expect(readFileSync(path.join(root, 'abs-escape'), 'utf8')).toBe('x');
    expect(readFileSync(path.join(root, 'outside/planted'), 'utf8')).toBe('through a relative symlink');
    expect(readFileSync(path.join(root, 'outside/planted3'), 'utf8')).toBe('through a chain');

    // A hardlink to a file outside is a link to the same name inside (absent: an error), never to the host file.
    await applyLayer(root, chunks(tar([{ name: 'h', type: 'link', linkname: '../../outside/keep' }])));
    expect(readFileSync(path.join(root, 'h'), 'utf8')).toBe('overwrite?');
    expect(lstatSync(path.join(root, 'h')).ino).not.toBe(lstatSync(path.join(outside, 'keep')).ino);
    await expect(applyLayer(root, chunks(tar([{ name: 'h3', type: 'link', linkname: '/../etc/shadow' }])))).rejects.toThrow(/does not exist/);
    writeFileSync(path.join(root, 'victim'), 'inside');
    await applyLayer(root, chunks(tar([{ name: 'h2', type: 'link', linkname: 'up/../../../victim' }])));
    expect(lstatSync(path.join(root, 'h2')).ino).toBe(lstatSync(path.join(root, 'victim')).ino);
    // A symlink loop ends with an error, not a hang.
    await expect(
      applyLayer(root, chunks(tar([{ name: 'loop', type: 'symlink', linkname: 'loop' }, { name: 'loop/x', data: 'x' }]))),
    ).rejects.toMatchObject({ code: 'ELOOP' });
    expect(readdirSync(outside)).toEqual(['keep']);
  });

  it('turns OCI whiteouts into overlay whiteouts when applied onto an overlay snapshot', async () => {
    const s = createOverlaySnapshotter({ root: path.join(base, 'snaps') });
    try {
      const lower = await s.prepare('lower');
      await applyLayer(
        lower.path,
        chunks(
          tar([
            { name: 'bin/', type: 'directory' },
            { name: 'bin/old', data: 'old' },
            { name: 'bin/keep', data: 'keep' },
            { name: 'etc/', type: 'directory' },
            { name: 'etc/a', data: 'a' },
            { name: 'etc/sub/', type: 'directory' },
            { name: 'etc/sub/b', data: 'b' },
          ]),
        ),
      );
      const pl = await s.commit('lower');
      const upper = await s.prepare('upper', pl);
      await applyLayer(
        upper.path,
        chunks(tar([{ name: 'bin/.wh.old' }, { name: 'etc/', type: 'directory' }, { name: 'etc/.wh..wh..opq' }, { name: 'etc/new', data: 'n' }])),
      );
      const pu = await s.commit('upper');
      const v = await s.view(pu);
      expect(tree(v.path)).toEqual(['bin/', 'bin/keep', 'etc/', 'etc/new']);
      await v.release();
      const ch = await s.changes!(pu);
      const wh = lstatSync(path.join(ch!.path, 'bin/old'));
      expect(wh.isCharacterDevice() && wh.rdev === 0).toBe(true);
      expect(existsSync(path.join(ch!.path, 'bin/keep'))).toBe(false);
      await ch!.release();
    } finally {
      await s.close();
    }
  });
});
