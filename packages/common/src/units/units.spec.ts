import { describe, expect, it } from 'vitest';
import { parseByteSize, parseDuration } from './units.js';

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
