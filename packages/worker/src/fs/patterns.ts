import path from 'node:path';

/**
 * Docker-style path patterns (.dockerignore, --include/--exclude, local
 * source include patterns): `*` and `?` never cross "/", `**` spans any
 * number of directories, `[...]` is a class (`[!...]` or `[^...]` negated),
 * `\` escapes. A pattern matches a path or any of its parents; a leading
 * `!` re-includes what earlier patterns matched; the last match wins.
 */
export class PatternMatcher {
  private readonly patterns: { re: RegExp; negated: boolean; dirs: string[] }[];

  constructor(patterns: readonly string[]) {
    this.patterns = [];
    for (const raw of patterns) {
      let p = raw.trim();
      const negated = p.startsWith('!');
      if (negated) p = p.slice(1).trim();
      p = cleanPattern(p);
      if (p === '') continue;
      this.patterns.push({ re: globToRegExp(p), negated, dirs: p.split('/') });
    }
  }

  get empty(): boolean {
    return this.patterns.length === 0;
  }

  /** Whether some pattern is a `!` exception (then excluded dirs must still be walked). */
  get hasExceptions(): boolean {
    return this.patterns.some((p) => p.negated);
  }

  /** Whether `rel` (a "/"-separated path relative to the pattern root) matches. */
  matches(rel: string): boolean {
    const p = cleanPattern(rel);
    let matched = false;
    for (const pat of this.patterns) {
      if (pat.negated !== matched) continue;
      if (matchesOrParent(pat.re, p)) matched = !pat.negated;
    }
    return matched;
  }

  /**
   * Whether some path below the directory `rel` could match, so a walk with
   * include patterns must descend into it.
   */
  mayMatchBelow(rel: string): boolean {
    const parts = cleanPattern(rel).split('/').filter(Boolean);
    for (const pat of this.patterns) {
      if (pat.negated) continue;
      if (prefixCouldMatch(pat.dirs, parts)) return true;
    }
    return false;
  }
}

function matchesOrParent(re: RegExp, p: string): boolean {
  if (re.test(p)) return true;
  let dir = p;
  for (;;) {
    const i = dir.lastIndexOf('/');
    if (i <= 0) return false;
    dir = dir.slice(0, i);
    if (re.test(dir)) return true;
  }
}

function prefixCouldMatch(patParts: string[], parts: string[]): boolean {
  for (let i = 0; i < parts.length; i++) {
    const pp = patParts[i];
    if (pp === undefined) return true; // the pattern matched a parent already
    if (pp === '**') return true;
    if (!matchComponent(pp, parts[i]!)) return false;
  }
  return true;
}

/** A pattern or path as Docker cleans it: no leading "/" or "./", no trailing "/". */
function cleanPattern(p: string): string {
  if (p === '') return '';
  const c = path.posix.normalize(p).replace(/^\/+/, '').replace(/\/+$/, '');
  return c === '.' ? '' : c;
}

const REGEXP_SPECIAL = /[.*+?^${}()|[\]\\/]/;

/** A Docker pattern as an anchored RegExp over the whole "/"-separated path. */
export function globToRegExp(pattern: string): RegExp {
  let re = '^';
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i]!;
    if (ch === '*') {
      if (pattern[i + 1] === '*') {
        i++;
        if (pattern[i + 1] === '/') i++;
        re += i + 1 >= pattern.length ? '.*' : '(?:.*/)?';
      } else {
        re += '[^/]*';
      }
    } else if (ch === '?') {
      re += '[^/]';
    } else if (ch === '[') {
      const end = pattern.indexOf(']', i + 2);
      if (end < 0) {
        re += '\\[';
        continue;
      }
      let cls = pattern.slice(i + 1, end);
      if (cls.startsWith('!')) cls = `^${cls.slice(1)}`;
      re += `[${cls.replace(/\\/g, '\\\\')}]`;
      i = end;
    } else if (ch === '\\' && i + 1 < pattern.length) {
      i++;
      re += escapeChar(pattern[i]!);
    } else {
      re += escapeChar(ch);
    }
  }
  return new RegExp(`${re}$`, 's');
}

function escapeChar(ch: string): string {
  return REGEXP_SPECIAL.test(ch) ? `\\${ch}` : ch;
}

/** Whether `s` holds glob metacharacters (`*`, `?`, `[`). */
export function hasWildcard(s: string): boolean {
  return /[*?[]/.test(s);
}

/** fnmatch of one path component (no "/" in `name`). */
export function matchComponent(pattern: string, name: string): boolean {
  return globToRegExp(pattern).test(name);
}
