import { describe, expect, it } from 'vitest';
import { parseCsv, parseCsvPairs } from './csv.js';
import { parseFlags } from './flag-parser.js';
import { UsageError } from './usage-error.js';

const specs = {
  file: { kind: 'string', short: 'f' },
  tag: { kind: 'list', short: 't' },
  push: { kind: 'bool' },
  help: { kind: 'bool', short: 'h' },
  all: { kind: 'bool', short: 'a' },
} as const;

describe('parseFlags', () => {
  it('accepts every spelling of a value', () => {
    for (const argv of [['--file', 'x'], ['--file=x'], ['-f', 'x'], ['-fx'], ['-f=x']]) {
      expect(parseFlags(argv, specs).flags.file).toBe('x');
    }
  });

  it('keeps the last string, every list value, and interleaved args', () => {
    const { flags, args } = parseFlags(['a', '-f', '1', 'b', '--file', '2', '-t', 'x', '--tag=y', '-tz', 'c'], specs);
    expect(flags).toEqual({ file: '2', tag: ['x', 'y', 'z'], push: false, help: false, all: false });
    expect(args).toEqual(['a', 'b', 'c']);
  });

  it('treats - as an argument and stops at --', () => {
    expect(parseFlags(['-', '--', '--push', '-x'], specs)).toEqual({
      flags: { file: undefined, tag: [], push: false, help: false, all: false },
      args: ['-', '--push', '-x'],
    });
  });

  it('takes values that look like short flags or are empty', () => {
    expect(parseFlags(['-f', '-', '-t', '-x', '--tag', ''], specs).flags).toMatchObject({ file: '-', tag: ['-x', ''] });
  });

  it('parses booleans with =value and clustered shorthands', () => {
    expect(parseFlags(['--push=false'], specs).flags.push).toBe(false);
    expect(parseFlags(['--push=1'], specs).flags.push).toBe(true);
    expect(parseFlags(['-ha'], specs).flags).toMatchObject({ help: true, all: true });
    expect(parseFlags(['-at', 'v'], specs).flags).toMatchObject({ all: true, tag: ['v'] });
    expect(parseFlags(['-a=false'], specs).flags.all).toBe(false);
  });

  it.each([
    [['--nope'], 'unknown flag: --nope', '--nope'],
    [['--nope=1'], 'unknown flag: --nope', '--nope'],
    [['-x'], "unknown shorthand flag: 'x' in -x", '-x'],
    [['-ax'], "unknown shorthand flag: 'x' in -ax", '-x'],
    [['--file'], 'flag needs an argument: --file', '--file'],
    [['-f'], "flag needs an argument: 'f' in -f", '--file'],
    [['--tag', '--push'], 'flag needs an argument: --tag', '--tag'],
    [['--push=yes'], 'invalid argument "yes" for "--push" flag: want true or false', '--push'],
  ])('%j -> %s', (argv, message, field) => {
    try {
      parseFlags(argv, specs);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(UsageError);
      expect((err as UsageError).message).toBe(message);
      expect((err as UsageError).details.field).toBe(field);
    }
  });
});

describe('csv', () => {
  it('splits like encoding/csv', () => {
    expect(parseCsv('a,b,,c', '--x')).toEqual(['a', 'b', '', 'c']);
    expect(parseCsv('', '--x')).toEqual(['']);
    expect(parseCsv('"a,b",c', '--x')).toEqual(['a,b', 'c']);
    expect(parseCsv('"say ""hi""",x', '--x')).toEqual(['say "hi"', 'x']);
    expect(parseCsv('x,"",y', '--x')).toEqual(['x', '', 'y']);
  });

  it('rejects malformed quoting naming the flag', () => {
    expect(() => parseCsv('"open', '--output')).toThrow('invalid value ""open" for --output: unterminated quote');
    expect(() => parseCsv('a"b', '--output')).toThrow(/--output: bare "/);
    expect(() => parseCsv('"a"b', '--output')).toThrow(/--output: extraneous text/);
  });

  it('parses key=value pairs, lower-casing keys, last value wins', () => {
    expect([...parseCsvPairs('Type=local,dest=a=b,dest=c', '--output')]).toEqual([
      ['type', 'local'],
      ['dest', 'c'],
    ]);
    expect(() => parseCsvPairs('type=local,oops', '--output')).toThrow('invalid value "type=local,oops" for --output: field "oops" must be a key=value pair');
    expect(() => parseCsvPairs('=x', '--cache-to')).toThrow(/--cache-to/);
  });
});
