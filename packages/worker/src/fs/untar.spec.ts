import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { buildTar, type TarEntryInit } from '../testing/tar.js';
import { chainIdOf, layerCompression } from '../ops/image-source.js';
import { extractTar } from './untar.js';

async function* one(b: Uint8Array): AsyncGenerator<Uint8Array> {
  yield b;
}

describe('extractTar in whiteout (layer) mode', () => {
  let base: string;
  let root: string;
  let outside: string;

  beforeEach(() => {
    base = mkdtempSync(path.join(tmpdir(), 'kiln-untar-'));
    root = path.join(base, 'root');
    outside = path.join(base, 'outside');
    mkdirSync(root);
    mkdirSync(outside);
    writeFileSync(path.join(outside, 'keep'), 'keep');
  });
  afterEach(() => rmSync(base, { recursive: true, force: true }));

  const apply = async (entries: TarEntryInit[], whiteouts = true) => extractTar(root, one(await buildTar(entries)), { whiteouts });
  const tree = (dir = root, prefix = ''): string[] =>
    readdirSync(dir, { withFileTypes: true })
      .flatMap((d) => {
        const rel = `${prefix}${d.name}`;
        return d.isDirectory() ? [`${rel}/`, ...tree(path.join(dir, d.name), `${rel}/`)] : [rel];
      })
      .sort();

  it('deletes files and directories named by .wh. entries and never writes the markers', async () => {
    await apply([
      { name: 'etc/', type: 'directory' },
      { name: 'etc/passwd', data: 'root' },
      { name: 'etc/old/', type: 'directory' },
      { name: 'etc/old/x', data: 'x' },
      { name: 'bin/', type: 'directory' },
      { name: 'bin/sh', data: 'sh' },
    ]);
    await apply([
      { name: 'etc/.wh.passwd' },
      { name: 'etc/.wh.old' },
      { name: 'bin/.wh.missing' },
      { name: 'nodir/.wh.x' },
      { name: 'etc/new', data: 'new' },
    ]);
    expect(tree()).toEqual(['bin/', 'bin/sh', 'etc/', 'etc/new']);
  });

  it('makes a directory opaque: lower content goes, this layer’s content stays', async () => {
    await apply([
      { name: 'd/', type: 'directory' },
      { name: 'd/lower', data: 'l' },
      { name: 'd/sub/', type: 'directory' },
      { name: 'd/sub/lower', data: 'l' },
      { name: 'other', data: 'o' },
    ]);
    await apply([
      { name: 'd/', type: 'directory' },
      { name: 'd/sub/new', data: 'n' },
      { name: 'd/.wh..wh..opq' },
      { name: 'd/upper', data: 'u' },
      { name: 'e/.wh..wh..opq' },
    ]);
    expect(tree()).toEqual(['d/', 'd/sub/', 'd/sub/new', 'd/upper', 'e/', 'other']);
  });

  it('keeps whiteout names as plain files outside layer mode', async () => {
    await apply([{ name: 'a/.wh.b', data: '' }], false);
    expect(tree()).toEqual(['a/', 'a/.wh.b']);
  });

  it('keeps hostile whiteouts and entries inside the root', async () => {
    await apply([
      { name: 'escape', type: 'symlink', linkname: '../outside' },
      { name: 'abs', type: 'symlink', linkname: '/' },
    ]);
    await apply([
      { name: 'escape/.wh.keep' },
      { name: '../outside/.wh.keep' },
      { name: '/../../outside/.wh.keep' },
      { name: 'abs/.wh..wh..opq' },
      { name: 'escape/.wh..wh..opq' },
    ]);
    expect(readFileSync(path.join(outside, 'keep'), 'utf8')).toBe('keep');
    // "abs/" resolves to the root itself: its opaque marker empties the root of lower content.
    expect(existsSync(root)).toBe(true);

    await apply([
      { name: 'l', type: 'symlink', linkname: '/' },
      { name: 'l/../../outside/evil', data: 'evil' },
      { name: '../evil2', data: 'evil' },
      { name: 'h', type: 'link', linkname: '../outside/keep' },
    ]).catch(() => undefined);
    expect(readdirSync(outside)).toEqual(['keep']);
    expect(existsSync(path.join(base, 'evil2'))).toBe(false);
    const h = path.join(root, 'h');
    if (existsSync(h)) expect(lstatSync(h).ino).not.toBe(lstatSync(path.join(outside, 'keep')).ino);
  });

  it('rejects whiteouts of "." and ".."', async () => {
    await expect(apply([{ name: 'a/.wh..' }])).rejects.toThrow(/invalid whiteout/);
    await expect(apply([{ name: 'a/.wh...' }])).rejects.toThrow(/invalid whiteout/);
    expect(existsSync(root)).toBe(true);
  });

  it('keeps symlinks, hardlinks, modes and mtimes', async () => {
    await apply([
      { name: 'bin/', type: 'directory', mtime: 1000 },
      { name: 'bin/busybox', data: 'bb', mode: 0o755, mtime: 2000 },
      { name: 'bin/sh', type: 'symlink', linkname: 'busybox' },
      { name: 'bin/ls', type: 'link', linkname: 'bin/busybox' },
    ]);
    expect(readlinkSync(path.join(root, 'bin/sh'))).toBe('busybox');
    const bb = lstatSync(path.join(root, 'bin/busybox'));
    expect(bb.mode & 0o7777).toBe(0o755);
    expect(bb.mtimeMs).toBe(2_000_000);
    expect(lstatSync(path.join(root, 'bin/ls')).ino).toBe(bb.ino);
    expect(lstatSync(path.join(root, 'bin')).mtimeMs).toBe(1_000_000);
  });
});

describe('layer helpers', () => {
  it('computes OCI chain ids', () => {
    const a = `sha256:${'a'.repeat(64)}`;
    const b = `sha256:${'b'.repeat(64)}`;
    expect(chainIdOf(undefined, a)).toBe(a);
    // sha256("sha256:aaa... sha256:bbb...")
    expect(chainIdOf(a, b)).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(chainIdOf(a, b)).not.toBe(chainIdOf(b, a));
  });

  it('knows tar, gzip and zstd by media type and refuses others', () => {
    expect(layerCompression('application/vnd.oci.image.layer.v1.tar')).toBe('none');
    expect(layerCompression('application/vnd.oci.image.layer.v1.tar+gzip')).toBe('gzip');
    expect(layerCompression('application/vnd.docker.image.rootfs.diff.tar.gzip')).toBe('gzip');
    expect(layerCompression('application/vnd.oci.image.layer.nondistributable.v1.tar+gzip')).toBe('gzip');
    expect(layerCompression('application/vnd.oci.image.layer.v1.tar+zstd')).toBe('zstd');
    expect(() => layerCompression('application/vnd.oci.image.layer.v1.tar+lz4')).toThrow(
      expect.objectContaining({ code: 'unimplemented', message: expect.stringContaining('application/vnd.oci.image.layer.v1.tar+lz4') }),
    );
  });
});
