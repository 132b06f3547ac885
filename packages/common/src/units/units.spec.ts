import { describe, expect, it } from 'vitest';
import { parseByteSize, parseDuration, parseRamBytes, parseUlimit } from './units.js';

describe('parseByteSize', () => {
  it.each([
    ['1000', 1000],
    ['10GB', 10e9],
    ['512MiB', 512 * 1024 ** 2],
    ['1.5k', 1500],
    ['2 gib', 2 * 1024 ** 3],
  ])('%s is %d bytes', (v, want) => expect(parseByteSize(v, 'gc.keep-storage')).toBe(want));

  it.each(['', 'ten', '10XB', '-1GB'])('rejects %j naming the field', (v) => {
    expect(() => parseByteSize(v, 'gc.keep-storage')).toThrow(/gc\.keep-storage/);
  });
});

describe('parseDuration', () => {
  it.each([
    ['48h', 48 * 3_600_000],
    ['1h30m', 90 * 60_000],
    ['90', 90_000],
    ['250ms', 250],
    ['7d', 7 * 86_400_000],
  ])('%s is %d ms', (v, want) => expect(parseDuration(v, 'gc.keep-duration')).toBe(want));

  it.each(['', 'h', '5 years', '1h-2m', '3w'])('rejects %j naming the field', (v) => {
    expect(() => parseDuration(v, 'gc.keep-duration')).toThrow(/gc\.keep-duration/);
  });
});

describe('parseRamBytes (docker --shm-size)', () => {
  it.each([
    ['128m', 128 * 1024 ** 2],
    ['1g', 1024 ** 3],
    ['64MiB', 64 * 1024 ** 2],
    ['4096', 4096],
  ])('%s is %d bytes', (v, want) => expect(parseRamBytes(v, '--shm-size')).toBe(want));
  it('rejects a bad size as go-units does', () => expect(() => parseRamBytes('12x', '--shm-size')).toThrow("invalid size: '12x'"));
});

describe('parseUlimit (docker --ulimit)', () => {
  it('takes name=soft[:hard], hard defaulting to soft, -1 unlimited', () => {
    expect(parseUlimit('nofile=1024:2048', 'u')).toEqual({ name: 'nofile', soft: 1024, hard: 2048 });
    expect(parseUlimit('nproc=300', 'u')).toEqual({ name: 'nproc', soft: 300, hard: 300 });
    expect(parseUlimit('core=-1', 'u')).toEqual({ name: 'core', soft: -1, hard: -1 });
  });
  it.each([
    ['nofile', 'invalid ulimit argument: nofile'],
    ['bogus=1', 'invalid ulimit type: bogus'],
    ['nofile=1:2:3', 'too many limit value arguments - 1:2:3'],
    ['nofile=4:2', 'ulimit soft limit must be less than or equal to hard limit: 4 > 2'],
    ['nofile=-1:2', 'soft: -1 (unlimited), hard: 2'],
    ['nofile=x', 'invalid ulimit argument: nofile=x'],
  ])('rejects %s', (v, msg) => expect(() => parseUlimit(v, 'u')).toThrow(msg));
});
