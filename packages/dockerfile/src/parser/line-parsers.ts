/**
 * Per-instruction argument splitting, as the Docker parser does it. These only
 * split; quotes and variables are handled later by the shell lexer.
 */
import { isGoSpace, trimLeftSpace } from '../shell/chars.js';
import { goQuote } from './text.js';

/** Parse failure without a location; the parser adds file and line. */
export class LineParseError extends Error {}

export interface ParsedArgs {
  next: string[];
  json: boolean;
  /** Only for ONBUILD: the raw trigger line. */
  subCommand?: string;
}

/** The Docker parser's notion of whitespace between words: ASCII blanks only. */
const WHITESPACE = /[\t\v\f\r ]+/;

/** Splits on runs of ASCII blanks, at most `limit` parts (the last part keeps the rest). */
export function splitWhitespace(s: string, limit = Infinity): string[] {
  const parts: string[] = [];
  let rest = s;
  while (parts.length < limit - 1) {
    const m = WHITESPACE.exec(rest);
    if (!m) break;
    parts.push(rest.slice(0, m.index));
    rest = rest.slice(m.index + m[0].length);
  }
  parts.push(rest);
  return parts;
}

/**
 * Splits into words on whitespace, keeping quotes and escapes in the words
 * (`a="b c"` stays one word `a="b c"`). Single quotes disable the escape token.
 */
export function parseWords(rest: string, escapeToken: string): string[] {
  const cps = Array.from(rest);
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let quote = '';
  let blankOK = false;
  for (let i = 0; i < cps.length; i++) {
    let ch = cps[i]!;
    if (!inWord && !quote) {
      if (isGoSpace(ch)) continue;
      inWord = true;
    }
    if (quote) {
      if (ch === quote) quote = '';
      if (ch === escapeToken && quote !== "'") {
        if (i + 1 === cps.length) {
          quote = '';
          continue; // a trailing escape token is dropped
        }
        word += ch;
        ch = cps[++i]!;
      }
      word += ch;
      continue;
    }
    if (isGoSpace(ch)) {
      inWord = false;
      if (blankOK || word.length > 0) words.push(word);
      word = '';
      blankOK = false;
      continue;
    }
    if (ch === "'" || ch === '"') {
      quote = ch;
      blankOK = true;
    } else if (ch === escapeToken) {
      if (i + 1 === cps.length) continue; // a trailing escape token is dropped
      // Outside quotes the escape token and the next character (even a quote) are kept together.
      word += ch;
      ch = cps[++i]!;
    }
    word += ch;
  }
  if ((inWord || quote) && (blankOK || word.length > 0)) words.push(word);
  return words;
}

const NONE: ParsedArgs = { next: [], json: false };

/** ENV / LABEL: `name value` (old form) or `name=value ...`; yields name, value, separator triples. */
function parseNameVal(rest: string, key: string, escapeToken: string): ParsedArgs {
  const words = parseWords(rest, escapeToken);
  if (words.length === 0) return NONE;
  if (!words[0]!.includes('=')) {
    const parts = splitWhitespace(rest, 2);
    if (parts.length < 2) throw new LineParseError(`${key} must have two arguments`);
    return { next: [parts[0]!, parts[1]!, ''], json: false };
  }
  const next: string[] = [];
  for (const word of words) {
    const eq = word.indexOf('=');
    if (eq < 0) {
      throw new LineParseError(`Syntax error - can't find = in ${goQuote(word)}. Must be of the form: name=value`);
    }
    next.push(word.slice(0, eq), word.slice(eq + 1), '=');
  }
  return { next, json: false };
}

/** ARG: words, each `name` or `name=value`. */
function parseNameOrNameVal(rest: string, escapeToken: string): ParsedArgs {
  return { next: parseWords(rest, escapeToken), json: false };
}

function parseStringsWhitespaceDelimited(rest: string): ParsedArgs {
  if (rest === '') return NONE;
  return { next: splitWhitespace(rest), json: false };
}

function parseString(rest: string): ParsedArgs {
  if (rest === '') return NONE;
  return { next: [rest], json: false };
}

const NOT_STRING_ARRAY = 'when using JSON array syntax, arrays must be comprised of strings only';

/** Replaces lone surrogates (invalid UTF-8 / bad escapes) with U+FFFD, as Go's JSON decoder does. */
function toValidUnicode(s: string): string {
  return s.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd');
}

/** A JSON array of strings, or undefined when `rest` is not valid JSON array syntax. */
function parseJSON(rest: string): string[] | undefined {
  const trimmed = trimLeftSpace(rest);
  if (!trimmed.startsWith('[')) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(trimmed);
  } catch {
    return undefined;
  }
  if (!Array.isArray(parsed)) return undefined;
  return parsed.map((v) => {
    if (typeof v !== 'string') throw new LineParseError(NOT_STRING_ARRAY);
    return toValidUnicode(v);
  });
}

/** CMD / ENTRYPOINT / RUN / SHELL: a JSON array, else the whole rest as one argument. */
function parseMaybeJSON(rest: string): ParsedArgs {
  if (rest === '') return NONE;
  const arr = parseJSON(rest);
  if (arr) return { next: arr, json: true };
  return { next: [rest], json: false };
}

/** ADD / COPY / VOLUME: a JSON array, else whitespace-separated words. */
function parseMaybeJSONToList(rest: string): ParsedArgs {
  const arr = parseJSON(rest);
  if (arr) return { next: arr, json: true };
  return parseStringsWhitespaceDelimited(rest);
}

/** HEALTHCHECK: a type word (`CMD`, `NONE`) then a maybe-JSON command. */
function parseHealthConfig(rest: string): ParsedArgs {
  const cps = Array.from(rest);
  let sep = 0;
  while (sep < cps.length && !isGoSpace(cps[sep]!)) sep++;
  if (sep === 0) return NONE;
  let next = sep;
  while (next < cps.length && isGoSpace(cps[next]!)) next++;
  const cmd = parseMaybeJSON(cps.slice(next).join(''));
  return { next: [cps.slice(0, sep).join(''), ...cmd.next], json: cmd.json };
}

function parseSubCommand(rest: string): ParsedArgs {
  if (rest === '') return NONE;
  return { next: [], json: false, subCommand: rest };
}

type LineParser = (rest: string, escapeToken: string) => ParsedArgs;

export const dispatch: Readonly<Record<string, LineParser>> = {
  add: parseMaybeJSONToList,
  arg: parseNameOrNameVal,
  cmd: parseMaybeJSON,
  copy: parseMaybeJSONToList,
  entrypoint: parseMaybeJSON,
  env: (rest, esc) => parseNameVal(rest, 'ENV', esc),
  expose: parseStringsWhitespaceDelimited,
  from: parseStringsWhitespaceDelimited,
  healthcheck: parseHealthConfig,
  label: (rest, esc) => parseNameVal(rest, 'LABEL', esc),
  maintainer: parseString,
  onbuild: parseSubCommand,
  run: parseMaybeJSON,
  shell: parseMaybeJSON,
  stopsignal: parseString,
  user: parseString,
  volume: parseMaybeJSONToList,
  workdir: parseString,
};

/**
 * Splits the leading `--flags` off an instruction's arguments. Quotes inside
 * flags are removed (`--x="a b"` -> `--x=a b`); `--` ends the flags and is dropped.
 */
export function extractBuilderFlags(line: string): { rest: string; flags: string[] } {
  const cps = Array.from(line);
  const flags: string[] = [];
  let i = 0;
  for (;;) {
    while (i < cps.length && isGoSpace(cps[i]!)) i++;
    if (i >= cps.length) return { rest: '', flags };
    if (cps[i] !== '-' || cps[i + 1] !== '-') return { rest: cps.slice(i).join(''), flags };
    let word = '';
    let blankOK = false;
    let quote = '';
    for (; i < cps.length; i++) {
      let ch = cps[i]!;
      if (quote) {
        if (ch === quote) {
          quote = '';
          continue;
        }
      } else {
        if (isGoSpace(ch)) break;
        if (ch === "'" || ch === '"') {
          quote = ch;
          blankOK = true;
          continue;
        }
      }
      if (ch === '\\') {
        if (i + 1 === cps.length) {
          quote = '';
          continue; // a trailing backslash is dropped
        }
        ch = cps[++i]!;
      }
      word += ch;
    }
    if (word === '--') return { rest: cps.slice(i).join(''), flags };
    if (blankOK || word.length > 0) flags.push(word);
  }
}
