import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { encodeTarHeader, readTarEntries, tarPadding, tarTrailer, TarFormatError, type TarHeader, type TarHeaderInit } from './tar.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'kiln-tar-'));
  dirs.push(d);
  return d;
}

function header(h: TarHeaderInit): TarHeaderInit {
  return { type: 'file', mode: 0o644, mtime: 1_700_000_000, uid: 0, gid: 0, size: 0, linkname: '', uname: '', gname: '', ...h };
}

function archive(entries: { h: TarHeaderInit; data?: string }[]): Buffer {
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
  for await (const { header: h, body } of readTarEntries(chunked(data, chunk))) {
    const parts: Uint8Array[] = [];
    for await (const b of body) parts.push(b);
    out.push({ h, data: Buffer.concat(parts).toString() });
  }
  return out;
}

/** A raw ustar block with a valid checksum (for hand-made headers). */
function rawBlock(fields: { name: string; flag: string; size?: number; mode?: number }, patch?: (b: Buffer) => void): Buffer {
  const b = Buffer.alloc(512);
  b.write(fields.name, 0, 100, 'utf8');
  b.write(`${(fields.mode ?? 0o644).toString(8).padStart(7, '0')}\0`, 100, 8, 'latin1');
  b.write('0000000\u0000', 108, 8, 'latin1');
  b.write('0000000\u0000', 116, 8, 'latin1');
  b.write(`${(fields.size ?? 0).toString(8).padStart(11, '0')}\0`, 124, 12, 'latin1');
  b.write('00000000000\u0000', 136, 12, 'latin1');
  b.write(fields.flag, 156, 1, 'latin1');
  b.write('ustar\u000000', 257, 8, 'latin1');
  patch?.(b);
  b.fill(' ', 148, 156);
  let sum = 0;
  for (const x of b) sum += x;
  b.write(`${sum.toString(8).padStart(6, '0')}\u0000 `, 148, 8, 'latin1');
  return b;
}

function paxData(records: Record<string, string>): Buffer {
  return Buffer.from(
    Object.entries(records)
      .map(([k, v]) => {
        const body = ` ${k}=${v}\n`;
        let len = body.length + 1;
        while (String(len).length + body.length !== len) len = String(len).length + body.length;
        return `${len}${body}`;
      })
      .join(''),
  );
}

describe('tar codec', () => {
  const longName = `${'d'.repeat(120)}/${'f'.repeat(90)}`; // fits ustar prefix+name
  const veryLong = 'x'.repeat(180); // needs pax
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

  it('round-trips special bits, big ids, directories named with a slash and long links through pax', async () => {
    const longer = `${'d'.repeat(120)}/${'f'.repeat(110)}`; // name part too long for ustar
    const got = await readAll(
      archive([
        { h: { name: 'a', mode: 0o4755, uid: 3000000, gid: 7, mtime: 1700000000 }, data: 'hello' },
        { h: { name: 'd/', type: 'directory' } },
        { h: { name: longer }, data: 'long' },
        { h: { name: 's', type: 'symlink', linkname: 'x'.repeat(150) } },
      ]),
    );
    expect(got.map((e) => [e.h.name, e.h.type, e.data])).toEqual([
      ['a', 'file', 'hello'],
      ['d', 'directory', ''],
      [longer, 'file', 'long'],
      ['s', 'symlink', ''],
    ]);
    expect(got[0]!.h).toMatchObject({ mode: 0o4755, uid: 3000000, gid: 7, mtime: 1700000000 });
    expect(got[1]!.h.mode).toBe(0o755); // directory default
    expect(got[3]!.h.linkname).toBe('x'.repeat(150));
  });

  it('round-trips device numbers and fifos', async () => {
    const got = await readAll(
      archive([
        { h: { name: 'dev/null', type: 'character-device', mode: 0o666, devmajor: 1, devminor: 3 } },
        { h: { name: 'dev/sda', type: 'block-device', devmajor: 8, devminor: 0 } },
        { h: { name: 'pipe', type: 'fifo' } },
      ]),
    );
    expect(got.map((e) => [e.h.name, e.h.type, e.h.devmajor, e.h.devminor])).toEqual([
      ['dev/null', 'character-device', 1, 3],
      ['dev/sda', 'block-device', 8, 0],
      ['pipe', 'fifo', 0, 0],
    ]);
  });

  it('is deterministic', () => {
    expect(archive(entries).equals(archive(entries))).toBe(true);
  });

  it('skips unread bodies', async () => {
    const names: string[] = [];
    for await (const { header: h } of readTarEntries(chunked(archive(entries), 64))) names.push(h.name);
    expect(names).toHaveLength(entries.length);
  });

  it('closes the source when the reader stops early', async () => {
    let closed = false;
    async function* source(): AsyncGenerator<Uint8Array> {
      try {
        yield* chunked(archive(entries), 100);
      } finally {
        closed = true;
      }
    }
    for await (const { header: h } of readTarEntries(source())) if (h.name === 'dir/a.txt') break;
    expect(closed).toBe(true);
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

  it('writes tars GNU tar lists by name (directories with their slash), and reads GNU long names', () => {
    const longer = `${'d'.repeat(120)}/${'f'.repeat(110)}`;
    const dir = tmp();
    const tarFile = join(dir, 'ours.tar');
    writeFileSync(tarFile, archive([{ h: { name: 'd', type: 'directory' } }, { h: { name: longer }, data: 'long' }, { h: { name: 'l', type: 'symlink', linkname: 'a' } }]));
    const stdout = execFileSync('tar', ['-tf', tarFile], { encoding: 'utf8' });
    expect(stdout.split('\n').filter(Boolean)).toEqual(['d/', longer, 'l']);
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

  it('reads a single long name GNU tar writes in gnu format', async () => {
    const longer = `${'d'.repeat(120)}/${'f'.repeat(110)}`;
    const dir = tmp();
    const src = join(dir, 'src');
    mkdirSync(join(src, dirname(longer)), { recursive: true });
    writeFileSync(join(src, longer), 'gnu');
    const gnuFile = join(dir, 'gnu.tar');
    execFileSync('tar', ['--format=gnu', '-cf', gnuFile, '-C', src, longer]);
    const got = await readAll(readFileSync(gnuFile), 4096);
    expect(got.map((e) => [e.h.name, e.data])).toEqual([[longer, 'gnu']]);
  });

  it('encodes numbers too large for octal fields (pax) and reads them back', async () => {
    const h = header({ name: 'big', uid: 0o7777777 + 5 });
    const [e] = await readAll(archive([{ h }]));
    expect(e!.h.uid).toBe(0o7777777 + 5);
  });

  it('reads GNU base-256 numbers', async () => {
    const block = rawBlock({ name: 'big', flag: '0' }, (b) => {
      b.fill(0, 108, 116);
      b[108] = 0x80;
      b.writeUInt32BE(0o7777777 + 5, 112);
    });
    const [e] = await readAll(Buffer.concat([block, tarTrailer()]));
    expect(e!.h.uid).toBe(0o7777777 + 5);
  });

  it('applies pax and global pax records, keeping fractional mtimes', async () => {
    const g = paxData({ uname: 'builder', mtime: '1700000000.5' });
    const x = paxData({ path: 'from-pax.txt', uid: '42' });
    const data = Buffer.concat([
      rawBlock({ name: 'global', flag: 'g', size: g.length }),
      g,
      tarPadding(g.length),
      rawBlock({ name: 'PaxHeaders/x', flag: 'x', size: x.length }),
      x,
      tarPadding(x.length),
      rawBlock({ name: 'short', flag: '0' }),
      rawBlock({ name: 'next', flag: '0' }),
      tarTrailer(),
    ]);
    const got = await readAll(data);
    expect(got.map((e) => [e.h.name, e.h.uid, e.h.uname, e.h.mtime])).toEqual([
      ['from-pax.txt', 42, 'builder', 1700000000.5],
      ['next', 0, 'builder', 1700000000.5],
    ]);
  });

  it('reads old-style directories (a file entry named with a slash)', async () => {
    const got = await readAll(Buffer.concat([rawBlock({ name: 'olddir/', flag: '\0', mode: 0o755 }), tarTrailer()]));
    expect(got.map((e) => [e.h.name, e.h.type])).toEqual([['olddir', 'directory']]);
  });

  it('rejects a corrupt header', async () => {
    const data = archive(entries);
    data[5] = data[5]! ^ 0xff;
    await expect(readAll(data)).rejects.toThrow(/checksum/);
    const one = archive([{ h: { name: 'a' }, data: 'x' }]);
    one[0] = 'b'.charCodeAt(0);
    await expect(readAll(one)).rejects.toThrow(TarFormatError);
  });

  it('rejects unknown entry types and bad numbers', async () => {
    await expect(readAll(Buffer.concat([rawBlock({ name: 'sparse', flag: 'S' }), tarTrailer()]))).rejects.toThrow(/unsupported tar entry type "S"/);
    const bad = rawBlock({ name: 'bad', flag: '0' }, (b) => b.write('12x4567\u0000', 100, 8, 'latin1'));
    await expect(readAll(Buffer.concat([bad, tarTrailer()]))).rejects.toThrow(/bad number/);
  });

  it('rejects a truncated archive', async () => {
    const data = archive([{ h: header({ name: 'a' }), data: 'x'.repeat(2000) }]);
    await expect(readAll(data.subarray(0, 1000))).rejects.toThrow(/unexpected end/);
    await expect(readAll(data.subarray(0, 300))).rejects.toThrow(/unexpected end/);
  });

  it('ends at a clean EOF between entries', async () => {
    const data = archive([{ h: header({ name: 'a' }), data: 'x' }]);
    expect((await readAll(data.subarray(0, 1024))).map((e) => e.data)).toEqual(['x']);
  });
});
