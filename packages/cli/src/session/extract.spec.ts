import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { extractTar, safeRelPath, writeFileOutput } from './extract.js';
import { tarOf } from '../testing/fixtures/tar-of.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'kiln-extract-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

async function* chunks(data: Uint8Array, size = 100): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}

describe('extractTar', () => {
  it('creates files, dirs, symlinks and hard links with modes and mtimes', async () => {
    const dest = join(dir, 'out', 'nested');
    const n = await extractTar(
      chunks(
        tarOf([
          { name: 'ro', type: 'directory', mode: 0o555, mtime: 1_500_000_000 },
          { name: 'ro/file.sh', mode: 0o750, data: '#!/bin/sh\n' },
          { name: 'implicit/parent/x.txt', data: 'x' },
          { name: 'link', type: 'symlink', linkname: 'ro/file.sh' },
          { name: 'hard', type: 'link', linkname: 'implicit/parent/x.txt' },
          { name: 'dev', type: 'fifo' },
        ]),
      ),
      dest,
    );
    expect(n).toBe(5);
    expect(statSync(join(dest, 'ro')).mode & 0o7777).toBe(0o555);
    expect(statSync(join(dest, 'ro')).mtimeMs).toBe(1_500_000_000_000);
    expect(statSync(join(dest, 'ro/file.sh')).mode & 0o7777).toBe(0o750);
    expect(statSync(join(dest, 'ro/file.sh')).mtimeMs).toBe(1_650_000_000_000);
    expect(readFileSync(join(dest, 'ro/file.sh'), 'utf8')).toBe('#!/bin/sh\n');
    expect(readlinkSync(join(dest, 'link'))).toBe('ro/file.sh');
    expect(statSync(join(dest, 'hard')).ino).toBe(statSync(join(dest, 'implicit/parent/x.txt')).ino);
    expect(existsSync(join(dest, 'dev'))).toBe(false);
  });

  it('replaces existing files and symlinks instead of writing through them', async () => {
    mkdirSync(join(dir, 'victim'));
    const dest = join(dir, 'dest');
    mkdirSync(dest);
    symlinkSync(join(dir, 'victim', 'f'), join(dest, 'f'));
    await extractTar(chunks(tarOf([{ name: 'f', data: 'new' }])), dest);
    expect(lstatSync(join(dest, 'f')).isFile()).toBe(true);
    expect(existsSync(join(dir, 'victim', 'f'))).toBe(false);
  });

  it.each(['../evil', 'a/../../evil', '/etc/evil', './../evil'])('rejects %s', async (name) => {
    const dest = join(dir, 'dest');
    await expect(extractTar(chunks(tarOf([{ name: 'ok', data: '1' }, { name, data: 'x' }])), dest)).rejects.toThrow(/refusing to extract/);
    expect(existsSync(join(dir, 'evil'))).toBe(false);
    expect(readFileSync(join(dest, 'ok'), 'utf8')).toBe('1');
  });

  it('rejects writing through a symlink the archive created', async () => {
    const dest = join(dir, 'dest');
    mkdirSync(join(dir, 'outside'));
    const tar = tarOf([
      { name: 'sneaky', type: 'symlink', linkname: '../outside' },
      { name: 'sneaky/evil', data: 'x' },
    ]);
    await expect(extractTar(chunks(tar), dest)).rejects.toThrow(/through a symlink/);
    expect(existsSync(join(dir, 'outside', 'evil'))).toBe(false);
  });

  it('rejects hard links out of the destination', async () => {
    await expect(extractTar(chunks(tarOf([{ name: 'h', type: 'link', linkname: '../../etc/passwd' }])), join(dir, 'd'))).rejects.toThrow(
      /refusing to extract/,
    );
  });

  it('safeRelPath normalizes harmless paths', () => {
    expect(safeRelPath('./a/./b/')).toBe('a/b');
    expect(safeRelPath('a/../b')).toBe('b');
    expect(safeRelPath('.')).toBe('');
  });
});

describe('writeFileOutput', () => {
  it('writes a file, creating parents', async () => {
    const dest = join(dir, 'a', 'b', 'out.tar');
    const n = await writeFileOutput(chunks(Buffer.from('x'.repeat(1000)), 64), dest, new PassThrough());
    expect(n).toBe(1000);
    expect(readFileSync(dest, 'utf8')).toBe('x'.repeat(1000));
  });

  it('keeps the previous file when the stream fails, and leaves no partial file', async () => {
    const dest = join(dir, 'out.tar');
    writeFileSync(dest, 'previous good export');
    async function* broken(): AsyncGenerator<Uint8Array> {
      yield Buffer.from('half of the ');
      throw new Error('session lost');
    }
    await expect(writeFileOutput(broken(), dest, new PassThrough())).rejects.toThrow('session lost');
    expect(readFileSync(dest, 'utf8')).toBe('previous good export');
    expect(readdirSync(dir)).toEqual(['out.tar']);
    await writeFileOutput(chunks(Buffer.from('new export')), dest, new PassThrough());
    expect(readFileSync(dest, 'utf8')).toBe('new export');
    expect(readdirSync(dir)).toEqual(['out.tar']);
  });

  it('writes through a symlinked dest instead of replacing the link', async () => {
    const target = join(dir, 'real.tar');
    writeFileSync(target, 'old');
    symlinkSync(target, join(dir, 'link.tar'));
    await writeFileOutput(chunks(Buffer.from('via link')), join(dir, 'link.tar'), new PassThrough());
    expect(readFileSync(target, 'utf8')).toBe('via link');
    expect(lstatSync(join(dir, 'link.tar')).isSymbolicLink()).toBe(true);
  });

  it('writes - to stdout', async () => {
    const out = new PassThrough();
    const got: Buffer[] = [];
    out.on('data', (b: Buffer) => got.push(b));
    const n = await writeFileOutput(chunks(Buffer.from('hello world'), 3), '-', out);
    expect(n).toBe(11);
    expect(Buffer.concat(got).toString()).toBe('hello world');
  });
});
