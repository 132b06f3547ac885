import { describe, expect, it } from 'vitest';
import { subjectMatches, validateName, validateSubject } from './subject.js';

describe('subjectMatches', () => {
  it.each([
    ['a.b', 'a.b', true],
    ['a.b', 'a.c', false],
    ['a.b', 'a.b.c', false],
    ['a.*', 'a.b', true],
    ['a.*', 'a', false],
    ['a.*', 'a.b.c', false],
    ['*.b.*', 'x.b.y', true],
    ['a.>', 'a.b', true],
    ['a.>', 'a.b.c.d', true],
    ['a.>', 'a', false],
    ['>', 'a', true],
    ['>', 'a.b', true],
    ['a.*.>', 'a.b', false],
    ['a.*.>', 'a.b.c', true],
  ])('%s ~ %s -> %s', (pattern, subject, want) => {
    expect(subjectMatches(pattern, subject)).toBe(want);
  });
});

describe('validateSubject', () => {
  it('accepts well-formed subjects', () => {
    for (const s of ['a', 'a.b', 'kiln.build.01HX.vertex', 'a-b_c.D9']) expect(() => validateSubject(s, false)).not.toThrow();
    for (const s of ['a.*', '*', '>', 'a.*.>', 'a.>']) expect(() => validateSubject(s, true)).not.toThrow();
  });

  it('rejects malformed subjects naming the field', () => {
    for (const [s, wild] of [['', true], ['a..b', true], ['.a', true], ['a.', true], ['a b', true], ['a.>.b', true], ['a*', true], ['a.b>', true], ['a.*', false], ['>', false]] as const) {
      expect(() => validateSubject(s, wild), s).toThrow(expect.objectContaining({ code: 'invalid_argument', details: { field: 'subject' } }));
    }
  });
});

describe('validateName', () => {
  it('accepts token-safe names and rejects the rest', () => {
    expect(() => validateName('work-queue_1', 'name')).not.toThrow();
    for (const n of ['', 'a.b', 'a b', 'a*', 'a>']) expect(() => validateName(n, 'name')).toThrow(expect.objectContaining({ details: { field: 'name' } }));
  });
});
