import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { encodeTarHeader, readTar, tarPadding, tarTrailer, type TarHeader } from './tar.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'kiln-tar-'));
  dirs.push(d);
  return d;
}

function header(h: Partial<TarHeader> & { name: string }): TarHeader {
  return { type: 'file', mode: 0o644, mtime: 1_700_000_000, uid: 0, gid: 0, size: 0, linkname: '', uname: '', gname: '', ...h };
}

function archive(entries: { h: TarHeader; data?: string }[]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const { h, data } of entries) {
    const bytes = Buffer.from(data ?? '');
    parts.push(encodeTarHeader({ ...h, size: bytes.length }), bytes, tarPadding(bytes.length));
  }
  parts.push(tarTrailer());
  return Buffer.concat(parts);
}

async function* chunked(data: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}

async function readAll(data: Uint8Array, chunk = 7) {
  const out: { h: TarHeader; data: string }[] = [];
  for await (const { header: h, body } of readTar(chunked(data, chunk))) {
    const parts: Uint8Array[] = [];
    for await (const b of body) parts.push(b);
    out.push({ h, data: Buffer.concat(parts).toString() });
  }
  return out;
}

describe('tar codec', () => {
  const longName = `${'d'.repeat(120)}/${'f'.repeat(90)}`; // fits ustar prefix+name
  const veryLong = 'x'.repeat(180); // needs PAX
  const entries = [
    { h: header({ name: 'dir', type: 'directory', mode: 0o755 }) },
    { h: header({ name: 'dir/a.txt', mode: 0o600, uid: 1000, gid: 1001 }), data: 'hello' },
    { h: header({ name: 'dir/link', type: 'symlink', linkname: 'a.txt', mode: 0o777 }) },
    { h: header({ name: longName }), data: 'long' },
    { h: header({ name: veryLong, mode: 0o755 }), data: 'pax' },
    { h: header({ name: 'l2', type: 'symlink', linkname: 'y'.repeat(150) }) },
  ];

  it('round-trips names, modes, owners, links and data across odd chunk sizes', async () => {
    const data = archive(entries);
    for (const chunk of [1, 7, 512, 100_000]) {
      const got = await readAll(data, chunk);
      expect(got.map((e) => [e.h.name, e.h.type, e.h.mode, e.h.linkname, e.data])).toEqual([
        ['dir', 'directory', 0o755, '', ''],
        ['dir/a.txt', 'file', 0o600, '', 'hello'],
        ['dir/link', 'symlink', 0o777, 'a.txt', ''],
        [longName, 'file', 0o644, '', 'long'],
        [veryLong, 'file', 0o755, '', 'pax'],
        ['l2', 'symlink', 0o644, 'y'.repeat(150), ''],
      ]);
      expect(got[1]!.h).toMatchObject({ uid: 1000, gid: 1001, mtime: 1_700_000_000 });
    }
  });

  it('skips unread bodies', async () => {
    const names: string[] = [];
    for await (const { header: h } of readTar(chunked(archive(entries), 64))) names.push(h.name);
    expect(names).toHaveLength(entries.length);
  });

  it('writes archives GNU tar reads', () => {
    const dir = tmp();
    writeFileSync(join(dir, 'a.tar'), archive(entries));
    const listing = execFileSync('tar', ['-tvf', join(dir, 'a.tar')], { encoding: 'utf8' });
    expect(listing).toContain('drwxr-xr-x');
    expect(listing).toContain('-rw------- 1000/1001');
    expect(listing).toContain('dir/link -> a.txt');
    expect(listing).toContain(veryLong);
    expect(listing).toContain(longName);
    mkdirSync(join(dir, 'x'));
    execFileSync('tar', ['-xf', join(dir, 'a.tar'), '-C', join(dir, 'x')]);
    expect(readFileSync(join(dir, 'x', veryLong), 'utf8')).toBe('pax');
  });

  it('reads archives GNU tar writes (gnu and pax formats, long names)', async () => {
    const dir = tmp();
    const src = join(dir, 'src');
    const deep = join(src, 'n'.repeat(110), 'm'.repeat(110));
    mkdirSync(deep, { recursive: true });
    writeFileSync(join(deep, 'file.txt'), 'deep');
    for (const format of ['gnu', 'pax', 'ustar']) {
      const tarFile = join(dir, `${format}.tar`);
      try {
        execFileSync('tar', ['--format', format, '-cf', tarFile, '-C', src, '.'], { stdio: 'pipe' });
      } catch {
        continue; // ustar cannot hold these names
      }
      const got = await readAll(readFileSync(tarFile), 1000);
      const file = got.find((e) => e.h.name.endsWith('file.txt'));
      expect(file?.data, format).toBe('deep');
      expect(file?.h.name, format).toBe(`./${'n'.repeat(110)}/${'m'.repeat(110)}/file.txt`);
    }
  });

  it('encodes numbers too large for octal fields in base-256', async () => {
    const h = header({ name: 'big', uid: 0o7777777 + 5 });
    const [e] = await readAll(archive([{ h }]));
    expect(e!.h.uid).toBe(0o7777777 + 5);
  });

  it('rejects a corrupt header', async () => {
    const data = archive(entries);
    data[5] = data[5]! ^ 0xff;
    await expect(readAll(data)).rejects.toThrow(/checksum/);
  });

  it('rejects a truncated archive', async () => {
    const data = archive([{ h: header({ name: 'a' }), data: 'x'.repeat(2000) }]);
    await expect(readAll(data.subarray(0, 1000))).rejects.toThrow(/unexpected end/);
  });
});
