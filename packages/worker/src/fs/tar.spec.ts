import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { buildTar, readTar } from '../testing/tar.js';

const run = promisify(execFile);

describe('tar codec', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'kiln-tar-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const longName = `${'d'.repeat(120)}/${'f'.repeat(110)}`;

  it('round-trips entries, long names and links through pax', async () => {
    const bytes = await buildTar([
      { name: 'a', data: 'hello', mode: 0o4755, uid: 3000000, gid: 7, mtime: 1700000000 },
      { name: 'd/', type: 'directory' },
      { name: longName, data: 'long' },
      { name: 's', type: 'symlink', linkname: 'x'.repeat(150) },
    ]);
    const entries = await readTar(bytes);
    expect(entries.map((e) => [e.name, e.type, e.data.toString()])).toEqual([
      ['a', 'file', 'hello'],
      ['d/', 'directory', ''],
      [longName, 'file', 'long'],
      ['s', 'symlink', ''],
    ]);
    expect(entries[0]).toMatchObject({ mode: 0o4755, uid: 3000000, gid: 7, mtime: 1700000000 });
    expect(entries[3]!.linkname).toBe('x'.repeat(150));
  });

  it('writes tars GNU tar reads, and reads tars GNU tar writes', async () => {
    const tarFile = path.join(dir, 'ours.tar');
    await writeFile(tarFile, await buildTar([{ name: longName, data: 'long' }, { name: 'l', type: 'symlink', linkname: 'a' }]));
    const { stdout } = await run('tar', ['-tf', tarFile]);
    expect(stdout.split('\n').filter(Boolean)).toEqual([longName, 'l']);

    const src = path.join(dir, 'src');
    await run('mkdir', ['-p', path.join(src, path.dirname(longName))]);
    await writeFile(path.join(src, longName), 'gnu');
    const gnuFile = path.join(dir, 'gnu.tar');
    await run('tar', ['--format=gnu', '-cf', gnuFile, '-C', src, longName]);
    const entries = await readTar(await readFile(gnuFile));
    expect(entries.map((e) => [e.name, e.data.toString()])).toEqual([[longName, 'gnu']]);
  });

  it('rejects a corrupt header', async () => {
    const bytes = Buffer.from(await buildTar([{ name: 'a', data: 'x' }]));
    bytes[0] = 'b'.charCodeAt(0);
    await expect(readTar(bytes)).rejects.toThrow(/checksum/);
  });
});
