import { posix } from 'node:path';
import { InvalidArgumentError } from '../errors/errors.js';

/**
 * Docker/BuildKit path patterns, as used by `.dockerignore`, by the
 * include/exclude patterns of a local source fetch and by COPY
 * (moby's patternmatcher semantics):
 *
 * - `*` matches any run of characters except `/`, `?` one character except
 *   `/`, `[a-z]`/`[!a-z]`/`[^a-z]` a class (never matching `/`), `\` escapes
 *   the next character;
 * - `**` matches any number of directories, including none (`**\/x`
 *   matches `x` and `a/b/x`; a trailing `**` matches everything below);
 * - a pattern matching a directory matches everything under it;
 * - a leading `!` makes an exception, and the last pattern that matches a
 *   path (or one of its parents) decides.
 *
 * Patterns are cleaned first: surrounding spaces trimmed, `.`/`..` segments
 * resolved, a leading `/` dropped; blank ones are skipped. Paths are slash
 * separated and relative (cleaned with cleanRelPath).
 */
export class PatternMatcher {
  /** The cleaned patterns, exceptions with their `!`. */
  readonly patterns: readonly string[];
  readonly #compiled: readonly Pattern[];

  /** Compiles `patterns`; a malformed one throws InvalidArgumentError naming `field`. */
  constructor(patterns: readonly string[], field?: string) {
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
        compiled.push({ text: p, exclusion, re: globToRegExp(p), segments: p.split('/').map(segmentMatcher) });
      } catch (err) {
        throw new InvalidArgumentError(`invalid pattern "${raw}": ${(err as Error).message}`, field, { cause: err });
      }
    }
    this.#compiled = compiled;
    this.patterns = compiled.map((p) => (p.exclusion ? `!${p.text}` : p.text));
  }

  /** Whether there are no patterns at all. */
  get empty(): boolean {
    return this.#compiled.length === 0;
  }

  /** Whether some pattern is a `!` exception (then excluded dirs may need a walk). */
  get hasExceptions(): boolean {
    return this.#compiled.some((p) => p.exclusion);
  }

  /**
   * Whether `path` is matched: the last pattern that matches the path or one
   * of its parent directories is not an exception.
   */
  matches(path: string): boolean {
    const file = cleanRelPath(path);
    const parts = file.split('/');
    let matched = false;
    for (const p of this.#compiled) {
      // An exception only matters once something matched, and vice versa.
      if (p.exclusion !== matched) continue;
      let match = p.re.test(file);
      for (let i = 1; !match && i < parts.length; i++) match = p.re.test(parts.slice(0, i).join('/'));
      if (match) matched = !p.exclusion;
    }
    return matched;
  }

  /**
   * Whether some non-exception pattern could match `dir` or a path beneath
   * it. Conservative: `true` may still match nothing; `false` is certain,
   * so a walker may skip the directory.
   */
  mayMatchUnder(dir: string): boolean {
    return this.#compiled.some((p) => !p.exclusion && mayMatchUnder(p, dir));
  }

  /**
   * Whether some exception (`!`) pattern could match a path beneath `dir`.
   * A walker must descend into an excluded directory only when this holds.
   */
  hasExceptionsUnder(dir: string): boolean {
    return this.#compiled.some((p) => p.exclusion && mayMatchUnder(p, dir));
  }
}

interface Pattern {
  text: string;
  exclusion: boolean;
  re: RegExp;
  /** Per-segment matchers for partial matches; 'any' for a segment holding `**`. */
  segments: (RegExp | 'any')[];
}

/** Cleans a relative path: slashes, no `.` segments, no leading `/` or `./`, no trailing `/`. */
export function cleanRelPath(p: string): string {
  const c = posix.normalize(`/${p.replace(/\\/g, '/')}`).slice(1);
  return c.replace(/\/$/, '');
}

/** Cleans a pattern as moby does: `.`/`..` resolved, no trailing or leading `/` (a lone `/` stays). */
export function cleanPattern(p: string): string {
  let c = posix.normalize(p);
  if (c.length > 1 && c.endsWith('/')) c = c.slice(0, -1);
  if (c.length > 1 && c.startsWith('/')) c = c.replace(/^\/+/, '');
  return c;
}

/** A (cleaned) pattern as an anchored RegExp over a whole "/"-separated path; throws on a malformed one. */
export function globToRegExp(pattern: string): RegExp {
  return new RegExp(`^${toRegex(pattern, false)}$`, 'su');
}

/** Whether `s` holds glob metacharacters (`*`, `?`, `[`). */
export function hasWildcard(s: string): boolean {
  return /[*?[]/.test(s);
}

/**
 * fnmatch of one path component (no "/" in `name`). Lenient: an
 * unterminated `[` or a trailing `\` matches itself.
 */
export function matchComponent(pattern: string, name: string): boolean {
  return new RegExp(`^${toRegex(pattern, true)}$`, 'su').test(name);
}

/** A segment's matcher; `**` (or a segment that only parses whole) matches any. */
function segmentMatcher(segment: string): RegExp | 'any' {
  if (segment.includes('**')) return 'any';
  try {
    return globToRegExp(segment);
  } catch {
    return 'any';
  }
}

function mayMatchUnder(p: Pattern, dir: string): boolean {
  const clean = cleanRelPath(dir);
  const parts = clean === '' ? [] : clean.split('/');
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

/** Translates a pattern to a regex body, like moby's patternmatcher. */
function toRegex(pattern: string, lenient: boolean): string {
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
      if (next === undefined) {
        if (!lenient) throw new Error('trailing backslash');
        re += escapeChar(ch);
        continue;
      }
      re += escapeChar(next);
      i++;
    } else if (ch === '[') {
      const parsed = parseClass(cps, i);
      if (parsed === undefined) {
        if (!lenient) throw new Error('unterminated character class');
        re += escapeChar(ch);
        continue;
      }
      re += parsed.cls;
      i = parsed.end;
    } else {
      re += escapeChar(ch);
    }
  }
  return re;
}

function escapeChar(ch: string): string {
  return SPECIAL.test(ch) || ch === '*' || ch === '?' || ch === '[' || ch === ']' || ch === '\\' || ch === '/' ? `\\${ch}` : ch;
}

/** A `[...]` class starting at cps[start] (it never matches `/`), or undefined when unterminated. */
function parseClass(cps: string[], start: number): { cls: string; end: number } | undefined {
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
  return undefined;
}

function classChar(ch: string): string {
  return /[\\\]\[\-^/]/.test(ch) ? `\\${ch}` : ch;
}
