import { existsSync, lstatSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { PassThrough } from 'node:stream';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeFileOutput } from './extract.js';
import { LOCAL_WRITE_PATH_ATTR, LOCAL_WRITE_TOKEN_ATTR, dropLocalWrite, finishLocalWrite, offerLocalWrites } from './local-write.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'kiln-cli-local-write-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const fileOut = (id: string, path: string) => ({ output: { id, kind: 'file' as const, path } });

describe('local write offers (CLI side)', () => {
  it('creates a temp file next to each file dest holding the token it offers; none for stdout or dirs', () => {
    const dest = join(dir, 'sub', 'img.tar');
    const offers = offerLocalWrites([fileOut('out0', dest), fileOut('out1', '-'), { output: { id: 'out2', kind: 'dir', path: dir } }, {}], {});
    expect([...offers.keys()]).toEqual(['out0']);
    const o = offers.get('out0')!;
    expect(dirname(o.tempPath)).toBe(dirname(dest));
    expect(o.attrs[LOCAL_WRITE_PATH_ATTR]).toBe(o.tempPath);
    expect(readFileSync(o.tempPath).toString('hex')).toBe(o.attrs[LOCAL_WRITE_TOKEN_ATTR]);
    expect(o.attrs[LOCAL_WRITE_TOKEN_ATTR]).toMatch(/^[0-9a-f]{64}$/);
    expect(statSync(o.tempPath).uid).toBe(process.getuid?.());
  });

  it('KILN_LOCAL_WRITE=0 offers nothing (the output is streamed)', () => {
    expect(offerLocalWrites([fileOut('out0', join(dir, 'a.tar'))], { KILN_LOCAL_WRITE: '0' }).size).toBe(0);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('renames the written temp file over dest when the size matches; else names dest in the error', () => {
    const dest = join(dir, 'img.tar');
    writeFileSync(dest, 'old');
    const o = offerLocalWrites([fileOut('out0', dest)], {}).get('out0')!;
    writeFileSync(o.tempPath, 'new output');
    expect(() => finishLocalWrite(o.tempPath, dest, 3)).toThrow(`output ${dest}: the daemon wrote 3 bytes but ${o.tempPath} holds 10`);
    expect(readFileSync(dest, 'utf8')).toBe('old');
    finishLocalWrite(o.tempPath, dest, 10);
    expect(readFileSync(dest, 'utf8')).toBe('new output');
    expect(existsSync(o.tempPath)).toBe(false);
    expect(() => finishLocalWrite(o.tempPath, dest, 10)).toThrow(/gone/);
    dropLocalWrite(o.tempPath); // no error when already gone
  });

  it('offers nothing for a dest that a rename must not replace (a symlink, a device)', () => {
    const target = join(dir, 'real.tar');
    writeFileSync(target, 'x');
    symlinkSync(target, join(dir, 'link.tar'));
    const offers = offerLocalWrites([fileOut('out0', join(dir, 'link.tar')), fileOut('out1', '/dev/null')], {});
    expect(offers.size).toBe(0);
    expect(readdirSync(dir).sort()).toEqual(['link.tar', 'real.tar']);
    expect(readdirSync('/dev').filter((n) => n.startsWith('.kiln-out-'))).toEqual([]);
  });

  it('a stream the daemon sent instead goes into the offered temp file, renamed over dest', async () => {
    const dest = join(dir, 'img.tar');
    const o = offerLocalWrites([fileOut('out0', dest)], {}).get('out0')!;
    async function* data(): AsyncGenerator<Uint8Array> {
      yield Buffer.from('streamed');
    }
    expect(await writeFileOutput(data(), dest, new PassThrough(), o.tempPath)).toBe(8);
    expect(readFileSync(dest, 'utf8')).toBe('streamed');
    expect(lstatSync(dest).isFile()).toBe(true);
    expect(readdirSync(dir)).toEqual(['img.tar']);
  });
});
