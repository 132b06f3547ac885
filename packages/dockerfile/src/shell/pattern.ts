/**
 * Shell glob patterns as used by `${V#p}`, `${V%p}` and `${V/p/r}`:
 * `*`, `?`, bracket expressions (`[abc]`, `[a-z]`, `[!x]`, `[^x]`,
 * `[[:alpha:]]`), and the escape token quoting the next character.
 * Matching is exact (whole-string) against candidate slices, which gives the
 * POSIX shortest/longest semantics directly.
 */

const POSIX_CLASSES: Record<string, string> = {
  alnum: '\\p{L}\\p{Nd}',
  alpha: '\\p{L}',
  blank: ' \\t',
  cntrl: '\\p{Cc}',
  digit: '0-9',
  graph: '\\p{L}\\p{M}\\p{N}\\p{P}\\p{S}',
  lower: '\\p{Ll}',
  print: '\\p{L}\\p{M}\\p{N}\\p{P}\\p{S} ',
  punct: '\\p{P}\\p{S}',
  space: '\\s',
  upper: '\\p{Lu}',
  xdigit: '0-9A-Fa-f',
};

function escapeRegexChar(ch: string): string {
  return /[\\^$.*+?()[\]{}|/]/.test(ch) ? `\\${ch}` : ch;
}

function escapeClassChar(ch: string): string {
  return /[\\^\]\[-]/.test(ch) ? `\\${ch}` : ch;
}

/** Parses a bracket expression starting at `cps[start] === '['`; returns the regex class and the index after `]`, or undefined if unterminated. */
function parseBracket(cps: string[], start: number, escapeToken: string): { re: string; end: number } | undefined {
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
      if (body === '') return undefined;
      return { re: `[${negate ? '^' : ''}${body}]`, end: i + 1 };
    }
    first = false;
    if (ch === '[' && cps[i + 1] === ':') {
      const close = cps.indexOf(':', i + 2);
      if (close > 0 && cps[close + 1] === ']') {
        const cls = POSIX_CLASSES[cps.slice(i + 2, close).join('')];
        if (cls !== undefined) {
          body += cls;
          i = close + 1;
          continue;
        }
      }
    }
    let lit = ch;
    if (ch === escapeToken && i + 1 < cps.length) lit = cps[++i]!;
    // Range a-z (the '-' is literal when first or last).
    if (cps[i + 1] === '-' && i + 2 < cps.length && cps[i + 2] !== ']') {
      let hi = cps[i + 2]!;
      let skip = 2;
      if (hi === escapeToken && i + 3 < cps.length) {
        hi = cps[i + 3]!;
        skip = 3;
      }
      if (hi.codePointAt(0)! < lit.codePointAt(0)!) return undefined;
      body += `${escapeClassChar(lit)}-${escapeClassChar(hi)}`;
      i += skip;
      continue;
    }
    body += escapeClassChar(lit);
  }
  return undefined;
}

/** Compiles a glob into an anchored (whole-string) regular expression. */
export function globToRegExp(pattern: string, escapeToken = '\\'): RegExp {
  const cps = Array.from(pattern);
  let out = '';
  for (let i = 0; i < cps.length; i++) {
    const ch = cps[i]!;
    if (ch === escapeToken) {
      // An escape quotes the next character; a trailing escape is literal.
      const next = cps[i + 1];
      if (next === undefined) out += escapeRegexChar(ch);
      else {
        out += escapeRegexChar(next);
        i++;
      }
      continue;
    }
    switch (ch) {
      case '*':
        out += '[^]*';
        break;
      case '?':
        out += '[^]';
        break;
      case '[': {
        const br = parseBracket(cps, i, escapeToken);
        if (br) {
          out += br.re;
          i = br.end - 1;
        } else out += '\\[';
        break;
      }
      default:
        out += escapeRegexChar(ch);
    }
  }
  return new RegExp(`^(?:${out})$`, 'u');
}

/** `${V#p}` / `${V##p}`: removes the shortest (longest when greedy) matching prefix. */
export function trimPrefixPattern(value: string, pattern: string, greedy: boolean, escapeToken = '\\'): string {
  const re = globToRegExp(pattern, escapeToken);
  const cps = Array.from(value);
  const n = cps.length;
  for (let k = 0; k <= n; k++) {
    const i = greedy ? n - k : k;
    if (re.test(cps.slice(0, i).join(''))) return cps.slice(i).join('');
  }
  return value;
}

/** `${V%p}` / `${V%%p}`: removes the shortest (longest when greedy) matching suffix. */
export function trimSuffixPattern(value: string, pattern: string, greedy: boolean, escapeToken = '\\'): string {
  const re = globToRegExp(pattern, escapeToken);
  const cps = Array.from(value);
  const n = cps.length;
  for (let k = 0; k <= n; k++) {
    const i = greedy ? k : n - k;
    if (re.test(cps.slice(i).join(''))) return cps.slice(0, i).join('');
  }
  return value;
}

/**
 * `${V/p/r}` / `${V//p/r}`: replaces the leftmost longest (non-empty) match, or
 * every non-overlapping one when `all`. An empty pattern leaves the value as is.
 */
export function replacePattern(value: string, pattern: string, replacement: string, all: boolean, escapeToken = '\\'): string {
  if (pattern === '') return value;
  const re = globToRegExp(pattern, escapeToken);
  const cps = Array.from(value);
  const n = cps.length;
  let out = '';
  let s = 0;
  let replaced = false;
  while (s < n) {
    let matchEnd = -1;
    if (all || !replaced) {
      for (let e = n; e > s; e--) {
        if (re.test(cps.slice(s, e).join(''))) {
          matchEnd = e;
          break;
        }
      }
    }
    if (matchEnd > 0) {
      out += replacement;
      s = matchEnd;
      replaced = true;
    } else {
      out += cps[s]!;
      s++;
    }
  }
  return out;
}
