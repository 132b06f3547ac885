import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { conformanceAvailable, conformancePath } from '../testing/fixtures/conformance.js';
import { envFromList, processWord, processWords, processWordWithMatches, ShellLexError } from './lex.js';

/** Go-style decoding: the files are UTF-8 (Go treats strings as bytes; every case here is valid UTF-8). */
const shared = conformanceAvailable('shell conformance (envVarTest, wordsTest)');

function readLines(name: string): string[] {
  if (!shared) return [];
  const text = readFileSync(conformancePath('shell', name)).toString('utf8');
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  return lines.map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l));
}

describe.skipIf(!shared)('shell conformance: envVarTest', () => {
  const env = envFromList(['PWD=/home', 'SHELL=bash', 'KOREAN=한국어', 'NULL=']);
  const cases: { lineNo: number; source: string; expected: string }[] = [];
  readLines('envVarTest').forEach((raw, i) => {
    if (raw.startsWith('#')) return;
    const line = raw.replace(/^[ \t]+/, '');
    if (line === '') return;
    const fields = line.split('|');
    if (fields.length !== 3) throw new Error(`envVarTest line ${i + 1}: expected 3 fields`);
    const platform = fields[0]!.trim();
    if (!['A', 'U', 'W'].includes(platform)) throw new Error(`envVarTest line ${i + 1}: bad platform ${platform}`);
    if (platform === 'W') return; // Linux runs A and U
    cases.push({ lineNo: i + 1, source: fields[1]!.trim(), expected: fields[2]!.trim() });
  });

  it('has cases', () => expect(cases.length).toBeGreaterThan(100));

  for (const c of cases) {
    it(`line ${c.lineNo}: ${c.source} -> ${c.expected}`, () => {
      if (c.expected === 'error') {
        expect(() => processWord(c.source, env, { escapeToken: '\\' })).toThrow(ShellLexError);
      } else {
        expect(processWord(c.source, env, { escapeToken: '\\' })).toBe(c.expected);
      }
    });
  }
});

describe.skipIf(!shared)('shell conformance: wordsTest', () => {
  const cases: { lineNo: number; source: string; expected: string[]; env: Map<string, string> }[] = [];
  const envList: string[] = [];
  readLines('wordsTest').forEach((line, i) => {
    if (line.startsWith('#')) return;
    if (line.startsWith('ENV ')) {
      envList.push(line.slice('ENV '.length));
      return;
    }
    const fields = line.split('|');
    if (fields.length !== 2) throw new Error(`wordsTest line ${i + 1}: expected exactly one |`);
    cases.push({
      lineNo: i + 1,
      source: fields[0]!.trim(),
      expected: fields[1]!.replace(/^ +/, '').split(','),
      env: envFromList(envList),
    });
  });

  it('has cases', () => expect(cases.length).toBeGreaterThan(20));

  for (const c of cases) {
    it(`line ${c.lineNo}: ${c.source} -> ${c.expected.join(',')}`, () => {
      let result: string[];
      try {
        result = processWords(c.source, c.env, { escapeToken: '\\' });
      } catch (err) {
        expect(err).toBeInstanceOf(ShellLexError);
        result = ['error'];
      }
      expect(result).toEqual(c.expected);
    });
  }
});

describe('shell lexer', () => {
  const env = new Map([
    ['A', 'hello world'],
    ['PATHV', '/usr/local/bin/tool.tar.gz'],
    ['EMPTY', ''],
  ]);

  it('supports ${V-x} and ${V+x} without the colon (unset only)', () => {
    expect(processWord('${EMPTY-d}', env)).toBe('');
    expect(processWord('${UNSET-d}', env)).toBe('d');
    expect(processWord('${EMPTY:-d}', env)).toBe('d');
    expect(processWord('${EMPTY+x}', env)).toBe('x');
    expect(processWord('${EMPTY:+x}', env)).toBe('');
    expect(processWord('${UNSET+x}', env)).toBe('');
  });

  it('reports ${V?msg} / ${V:?msg} failures with the message', () => {
    expect(() => processWord('${UNSET?must be set}', env)).toThrow(/UNSET: must be set/);
    expect(() => processWord('${EMPTY:?}', env)).toThrow(/EMPTY: is not allowed to be empty/);
    expect(() => processWord('${UNSET?}', env)).toThrow(/UNSET: is not allowed to be unset/);
    expect(processWord('${A:?x}', env)).toBe('hello world');
  });

  it('removes prefixes and suffixes with glob patterns', () => {
    expect(processWord('${PATHV#*/}', env)).toBe('usr/local/bin/tool.tar.gz');
    expect(processWord('${PATHV##*/}', env)).toBe('tool.tar.gz');
    expect(processWord('${PATHV%.*}', env)).toBe('/usr/local/bin/tool.tar');
    expect(processWord('${PATHV%%.*}', env)).toBe('/usr/local/bin/tool');
    expect(processWord('${PATHV%/*}', env)).toBe('/usr/local/bin');
    expect(processWord('${PATHV#/usr}', env)).toBe('/local/bin/tool.tar.gz');
    expect(processWord('${PATHV#nomatch}', env)).toBe('/usr/local/bin/tool.tar.gz');
    expect(processWord('${PATHV#/???/}', env)).toBe('local/bin/tool.tar.gz');
    expect(processWord('${PATHV##*[/.]}', env)).toBe('gz');
    expect(processWord('${PATHV%[!z]*}', env)).toBe('/usr/local/bin/tool.tar.');
    expect(processWord('${A#\\*}', env)).toBe('hello world');
    expect(processWord('${UNSET#x}', env)).toBe('');
  });

  it('rejects pattern operators combined with a colon', () => {
    expect(() => processWord('${A:#x}', env)).toThrow(/unsupported modifier/);
    expect(() => processWord('${A:%x}', env)).toThrow(/unsupported modifier/);
  });

  it('replaces first or all matches', () => {
    expect(processWord('${A/o/0}', env)).toBe('hell0 world');
    expect(processWord('${A//o/0}', env)).toBe('hell0 w0rld');
    expect(processWord('${A/l*o/X}', env)).toBe('heXrld');
    expect(processWord('${A//[lo]/}', env)).toBe('he wrd');
    expect(processWord('${A/x/y}', env)).toBe('hello world');
    expect(processWord('${PATHV//\\//_}', env)).toBe('_usr_local_bin_tool.tar.gz');
    expect(() => processWord('${A/x', env)).toThrow(/missing '\/'/);
    expect(() => processWord('${A/x/y', env)).toThrow(/missing '}'/);
  });

  it('supports the backtick escape token', () => {
    expect(processWord('a`$A', env, { escapeToken: '`' })).toBe('a$A');
    expect(processWord('a\\$A', env, { escapeToken: '`' })).toBe('a\\hello world');
    expect(processWord('"a`"b"', env, { escapeToken: '`' })).toBe('a"b');
  });

  it('splits unquoted expansions into words but not quoted ones', () => {
    expect(processWords('x $A "$A" y', env)).toEqual(['x', 'hello', 'world', 'hello world', 'y']);
  });

  it('keeps quotes and escapes when asked', () => {
    expect(processWords(`<<"EOF" 'a b' c\\ d`, {}, { rawQuotes: true, rawEscapes: true })).toEqual([
      '<<"EOF"',
      "'a b'",
      'c\\ d',
    ]);
  });

  it('leaves unset variables alone with skipUnsetEnv', () => {
    const opts = { skipUnsetEnv: true };
    expect(processWord('$U ${U} ${U:-x} ${U/a/b} $A', env, opts)).toBe('$U ${U} ${U:-x} ${U/a/b} hello world');
  });

  it('reports matched and unmatched variables', () => {
    const r = processWordWithMatches('$A ${UNSET:-$EMPTY} \\$NOT ${PATHV##*/}', env);
    expect([...r.matched].sort()).toEqual(['A', 'EMPTY', 'PATHV']);
    expect([...r.unmatched]).toEqual(['UNSET']);
    expect(r.result).toBe('hello world  $NOT tool.tar.gz');
    expect(r.words).toEqual(['hello', 'world', '$NOT', 'tool.tar.gz']);
  });

  it('accepts records and functions as env', () => {
    expect(processWord('$X-$Y', { X: '1' })).toBe('1-');
    expect(processWord('$toString', {})).toBe('');
    expect(processWord('$X', (n) => (n === 'X' ? 'fn' : undefined))).toBe('fn');
  });

  it('throws errors that name the word and the reason', () => {
    try {
      processWord('he${}', env);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ShellLexError);
      expect((err as ShellLexError).message).toBe('failed to process "he${}": syntax error: bad substitution');
      expect((err as ShellLexError).word).toBe('he${}');
    }
    expect(() => processWord("'abc", env)).toThrow(/matching single-quote/);
    expect(() => processWord('"abc', env)).toThrow(/matching double-quote/);
    expect(() => processWord('x', env, { escapeToken: '^' })).toThrow(/invalid escape token/);
  });
});
