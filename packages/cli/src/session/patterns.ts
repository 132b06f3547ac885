import { posix } from 'node:path';
import { InvalidArgumentError } from '@kiln/common';

/**
 * Docker/BuildKit path patterns, as used by `.dockerignore` and by the
 * include/exclude patterns a daemon sends with a fetch call (moby's
 * patternmatcher semantics):
 *
 * - `*` matches any run of characters except `/`, `?` one character except
 *   `/`, `[a-z]`/`[!a-z]` a class, `\` escapes the next character;
 * - `**` matches any number of directories, including none (`**\/x`
 *   matches `x` and `a/b/x`; a trailing `**` matches everything below);
 * - a pattern matching a directory matches everything under it;
 * - a leading `!` makes an exception, and the last pattern that matches a
 *   path (or one of its parents) decides.
 *
 * Patterns are cleaned first: surrounding spaces trimmed, `.`/`..` segments
 * resolved, a leading `/` dropped. Paths are slash separated and relative.
 */
export interface PatternMatcher {
  /** The cleaned patterns, exceptions with their `!`. */
  readonly patterns: readonly string[];
  /** Whether there are no patterns at all. */
  readonly empty: boolean;
  /**
   * Whether `path` is matched: the last pattern that matches the path or one
   * of its parent directories is not an exception.
   */
  matches(path: string): boolean;
  /**
   * Whether some non-exception pattern could match `dir` or a path beneath
   * it. Conservative: `true` may still match nothing; `false` is certain,
   * so a walker may skip the directory.
   */
  mayMatchUnder(dir: string): boolean;
  /**
   * Whether some exception (`!`) pattern could match a path beneath `dir`.
   * A walker must descend into an excluded directory only when this holds.
   */
  hasExceptionsUnder(dir: string): boolean;
}

interface Pattern {
  text: string;
  exclusion: boolean;
  re: RegExp;
  /** Per-segment matchers for partial matches; 'any' for a segment holding `**`. */
  segments: (RegExp | 'any')[];
}

/** Compiles `patterns`; a malformed pattern throws InvalidArgumentError naming `field`. */
export function compilePatterns(patterns: readonly string[], field?: string): PatternMatcher {
  const compiled: Pattern[] = [];
  for (const raw of patterns) {
    let p = raw.trim();
    if (p === '') continue;
    let exclusion = false;
    if (p.startsWith('!')) {
      exclusion = true;
      p = p.slice(1).trim();
      if (p === '') throw new InvalidArgumentError(`illegal exclusion pattern: "${raw}"`, field);
    }
    p = cleanPattern(p);
    try {
      compiled.push({
        text: p,
        exclusion,
        re: new RegExp(`^${toRegex(p)}$`, 'u'),
        segments: p.split('/').map(segmentMatcher),
      });
    } catch (err) {
      throw new InvalidArgumentError(`invalid pattern "${raw}": ${(err as Error).message}`, field, { cause: err });
    }
  }
  return new Matcher(compiled);
}

/**
 * Parses a `.dockerignore` file: one pattern per line, `#` comments and blank
 * lines skipped, a UTF-8 BOM dropped, absolute patterns made relative.
 */
export function parseIgnoreFile(text: string): string[] {
  const out: string[] = [];
  for (let line of text.replace(/^\uFEFF/, '').split(/\r?\n/)) {
    if (line.startsWith('#')) continue;
    line = line.trim();
    if (line === '') continue;
    const invert = line.startsWith('!');
    if (invert) line = line.slice(1).trim();
    if (line !== '') line = cleanPattern(line);
    out.push(invert ? `!${line}` : line);
  }
  return out;
}

/** Cleans a relative path: slashes, no `.` segments, no leading `/` or `./`. */
export function cleanRelPath(p: string): string {
  const c = posix.normalize(`/${p.replace(/\\/g, '/')}`).slice(1);
  return c.replace(/\/$/, '');
}

function cleanPattern(p: string): string {
  let c = posix.normalize(p);
  if (c.length > 1 && c.endsWith('/')) c = c.slice(0, -1);
  if (c.length > 1 && c.startsWith('/')) c = c.replace(/^\/+/, '');
  return c;
}

class Matcher implements PatternMatcher {
  readonly patterns: readonly string[];
  readonly empty: boolean;
  readonly #patterns: Pattern[];

  constructor(patterns: Pattern[]) {
    this.#patterns = patterns;
    this.patterns = patterns.map((p) => (p.exclusion ? `!${p.text}` : p.text));
    this.empty = patterns.length === 0;
  }

  matches(path: string): boolean {
    const file = cleanRelPath(path);
    const parts = file.split('/');
    let matched = false;
    for (const p of this.#patterns) {
      // An exception only matters once something matched, and vice versa.
      if (p.exclusion !== matched) continue;
      let match = p.re.test(file);
      for (let i = 1; !match && i < parts.length; i++) match = p.re.test(parts.slice(0, i).join('/'));
      if (match) matched = !p.exclusion;
    }
    return matched;
  }

  mayMatchUnder(dir: string): boolean {
    return this.#patterns.some((p) => !p.exclusion && mayMatchUnder(p, dir));
  }

  hasExceptionsUnder(dir: string): boolean {
    return this.#patterns.some((p) => p.exclusion && mayMatchUnder(p, dir));
  }
}

/** A segment's matcher; `**` (or a segment that only parses whole) matches any. */
function segmentMatcher(segment: string): RegExp | 'any' {
  if (segment.includes('**')) return 'any';
  try {
    return new RegExp(`^${toRegex(segment)}$`, 'u');
  } catch {
    return 'any';
  }
}

function mayMatchUnder(p: Pattern, dir: string): boolean {
  const parts = cleanRelPath(dir).split('/');
  for (let i = 0; i < parts.length; i++) {
    const seg = p.segments[i];
    // The pattern matched a parent of dir: everything beneath may match.
    if (seg === undefined) return true;
    if (seg === 'any') return true;
    if (!seg.test(parts[i]!)) return false;
  }
  return true;
}

const SPECIAL = /[.+()|{}$^]/;

/** Translates a (cleaned) pattern to a regex body, like moby's patternmatcher. */
function toRegex(pattern: string): string {
  const cps = [...pattern];
  let re = '';
  for (let i = 0; i < cps.length; i++) {
    const ch = cps[i]!;
    if (ch === '*') {
      if (cps[i + 1] === '*') {
        i++;
        if (cps[i + 1] === '/') i++;
        re += i + 1 >= cps.length ? '.*' : '(?:.*/)?';
      } else {
        re += '[^/]*';
      }
    } else if (ch === '?') {
      re += '[^/]';
    } else if (ch === '\\') {
      const next = cps[i + 1];
      if (next === undefined) throw new Error('trailing backslash');
      re += escapeChar(next);
      i++;
    } else if (ch === '[') {
      const { cls, end } = parseClass(cps, i);
      re += cls;
      i = end;
    } else {
      re += escapeChar(ch);
    }
  }
  return re;
}

function escapeChar(ch: string): string {
  return SPECIAL.test(ch) || ch === '*' || ch === '?' || ch === '[' || ch === ']' || ch === '\\' || ch === '/' ? `\\${ch}` : ch;
}

/** A `[...]` class starting at cps[start]; it never matches `/`. */
function parseClass(cps: string[], start: number): { cls: string; end: number } {
  let i = start + 1;
  let negate = false;
  if (cps[i] === '!' || cps[i] === '^') {
    negate = true;
    i++;
  }
  let body = '';
  let first = true;
  for (; i < cps.length; i++) {
    const ch = cps[i]!;
    if (ch === ']' && !first) {
      return { cls: negate ? `[^/${body}]` : `(?!/)[${body}]`, end: i };
    }
    first = false;
    if (ch === '\\') {
      const next = cps[++i];
      if (next === undefined) break;
      body += classChar(next);
    } else if (ch === '-' && body !== '' && cps[i + 1] !== ']') {
      body += '-';
    } else {
      body += classChar(ch);
    }
  }
  throw new Error('unterminated character class');
}

function classChar(ch: string): string {
  return /[\\\]\[\-^/]/.test(ch) ? `\\${ch}` : ch;
}
