/**
 * The Dockerfile shell lexer: the word expansion Dockerfile instructions get
 * (variables, quotes, escapes) without running a shell. Semantics follow
 * BuildKit's `frontend/dockerfile/shell` package.
 */
import { InvalidArgumentError } from '@kiln/common';
import { isGoDigit, isGoLetter, isGoSpace } from './chars.js';
import { replacePattern, trimPrefixPattern, trimSuffixPattern } from './pattern.js';

/**
 * Where variables come from: a map, a plain record (own properties only) or a
 * lookup function returning undefined for unset names.
 */
export type ShellEnv =
  | ReadonlyMap<string, string>
  | Readonly<Record<string, string>>
  | ((name: string) => string | undefined);

export interface ShellLexOptions {
  /** `\` (default) or `` ` ``, as set by the `escape` parser directive. */
  escapeToken?: string;
  /** Keep quote characters in the result (quotes still group and protect). */
  rawQuotes?: boolean;
  /** Keep escape tokens in the result (they still protect the next character). */
  rawEscapes?: boolean;
  /** Leave references to unset variables as written instead of expanding them to "". */
  skipUnsetEnv?: boolean;
  /** Treat quotes as ordinary characters; only `$` and escapes are special. */
  skipProcessQuotes?: boolean;
}

export interface ProcessWordResult {
  /** The word expanded as one string (whitespace kept). */
  result: string;
  /** The word split into fields: unquoted expansions are split on whitespace. */
  words: string[];
  /** Variable names that were looked up and set. */
  matched: Set<string>;
  /** Variable names that were looked up and not set. */
  unmatched: Set<string>;
}

/** A word the lexer could not process (syntax error or a `${V?msg}` failure). */
export class ShellLexError extends InvalidArgumentError {
  /** The input word. */
  readonly word: string;
  /** The bare reason, without the "failed to process" prefix. */
  readonly reason: string;
  constructor(word: string, reason: string) {
    super(`failed to process ${JSON.stringify(word)}: ${reason}`);
    this.name = 'ShellLexError';
    this.word = word;
    this.reason = reason;
  }
}

/** Internal failure, wrapped into a ShellLexError at the top. */
class LexFailure extends Error {}

type EOF = undefined;

class Scanner {
  private readonly cps: string[];
  private pos = 0;
  constructor(text: string) {
    this.cps = Array.from(text);
  }
  peek(): string | EOF {
    return this.cps[this.pos];
  }
  next(): string | EOF {
    const ch = this.cps[this.pos];
    if (ch !== undefined) this.pos++;
    return ch;
  }
}

/** Accumulates fields: unquoted expansion results split on whitespace, everything else is kept. */
class Words {
  private word = '';
  private readonly words: string[] = [];
  private inWord = false;

  addChar(ch: string): void {
    if (isGoSpace(ch)) {
      if (this.inWord && this.word.length > 0) {
        this.words.push(this.word);
        this.word = '';
        this.inWord = false;
      }
    } else {
      this.addRawChar(ch);
    }
  }
  addRawChar(ch: string): void {
    this.word += ch;
    this.inWord = true;
  }
  addString(s: string): void {
    for (const ch of s) this.addChar(ch);
  }
  addRawString(s: string): void {
    this.word += s;
    this.inWord = true;
  }
  getWords(): string[] {
    if (this.word.length > 0) {
      this.words.push(this.word);
      this.word = '';
      this.inWord = false;
    }
    return this.words;
  }
}

function lookupEnv(env: ShellEnv, name: string): string | undefined {
  if (typeof env === 'function') return env(name);
  if (env instanceof Map) return (env as ReadonlyMap<string, string>).get(name);
  const rec = env as Readonly<Record<string, string>>;
  return Object.prototype.hasOwnProperty.call(rec, name) ? rec[name] : undefined;
}

/** POSIX special parameters (`$@`, `$*`, `$#`, ...). */
function isSpecialParam(ch: string): boolean {
  return '@*#?-$!0'.includes(ch) && ch.length === 1;
}

class ShellWord {
  private readonly sc: Scanner;
  readonly matched = new Set<string>();
  readonly unmatched = new Set<string>();
  private readonly escapeToken: string;

  constructor(
    text: string,
    private readonly env: ShellEnv,
    private readonly opts: ShellLexOptions,
  ) {
    this.sc = new Scanner(text);
    this.escapeToken = opts.escapeToken ?? '\\';
  }

  process(): { result: string; words: string[] } {
    return this.processStopOn(undefined, this.opts.rawEscapes ?? false);
  }

  private getEnv(name: string): string | undefined {
    const v = lookupEnv(this.env, name);
    if (v !== undefined) this.matched.add(name);
    else this.unmatched.add(name);
    return v;
  }

  /** Reads until `stop` (consumed) or end of input; throws when `stop` is never found. */
  private processStopOn(stop: string | EOF, rawEscapes: boolean): { result: string; words: string[] } {
    let result = '';
    const words = new Words();
    const quotes = !this.opts.skipProcessQuotes;
    for (let ch = this.sc.peek(); ch !== undefined; ch = this.sc.peek()) {
      if (stop !== undefined && ch === stop) {
        this.sc.next();
        return { result, words: words.getWords() };
      }
      if (ch === '$' || (quotes && (ch === "'" || ch === '"'))) {
        const tmp = ch === '$' ? this.processDollar() : ch === "'" ? this.processSingleQuote() : this.processDoubleQuote();
        result += tmp;
        if (ch === '$') words.addString(tmp);
        else words.addRawString(tmp);
        continue;
      }
      this.sc.next();
      if (ch === this.escapeToken) {
        if (rawEscapes) {
          words.addRawChar(ch);
          result += ch;
        }
        // The escape token protects the next character; at the end of input it is dropped.
        const escaped = this.sc.next();
        if (escaped === undefined) break;
        words.addRawChar(escaped);
        result += escaped;
        continue;
      }
      words.addChar(ch);
      result += ch;
    }
    if (stop !== undefined) throw new LexFailure(`unexpected end of statement while looking for matching ${stop}`);
    return { result, words: words.getWords() };
  }

  /** Single quotes: everything is literal up to the next `'` (which cannot be escaped). */
  private processSingleQuote(): string {
    const raw = this.opts.rawQuotes ?? false;
    let result = raw ? this.sc.next()! : (this.sc.next(), '');
    for (;;) {
      const ch = this.sc.next();
      if (ch === undefined) throw new LexFailure('unexpected end of statement while looking for matching single-quote');
      if (ch === "'") return raw ? result + ch : result;
      result += ch;
    }
  }

  /** Double quotes: `$` expands; the escape token only escapes `"`, `$` and itself. */
  private processDoubleQuote(): string {
    const raw = this.opts.rawQuotes ?? false;
    const rawEscapes = this.opts.rawEscapes ?? false;
    let result = raw ? this.sc.next()! : (this.sc.next(), '');
    for (;;) {
      const ch = this.sc.peek();
      if (ch === undefined) throw new LexFailure('unexpected end of statement while looking for matching double-quote');
      if (ch === '"') {
        this.sc.next();
        return raw ? result + ch : result;
      }
      if (ch === '$') {
        result += this.processDollar();
        continue;
      }
      this.sc.next();
      if (ch === this.escapeToken) {
        const next = this.sc.peek();
        if (next === undefined) continue; // a trailing escape token is dropped
        if (next === '"' || next === '$' || next === this.escapeToken) {
          if (rawEscapes) result += ch;
          result += this.sc.next()!;
          continue;
        }
      }
      result += ch;
    }
  }

  /** Reads a variable name: letters/digits/_; all digits when it starts with one; or one special parameter. */
  private processName(): string {
    let name = '';
    for (let ch = this.sc.peek(); ch !== undefined; ch = this.sc.peek()) {
      if (name.length === 0 && isGoDigit(ch)) {
        for (let d = this.sc.peek(); d !== undefined && isGoDigit(d); d = this.sc.peek()) name += this.sc.next()!;
        return name;
      }
      if (name.length === 0 && isSpecialParam(ch)) return this.sc.next()!;
      if (!isGoLetter(ch) && !isGoDigit(ch) && ch !== '_') break;
      name += this.sc.next()!;
    }
    return name;
  }

  private processDollar(): string {
    this.sc.next(); // '$'
    if (this.sc.peek() !== '{') {
      const name = this.processName();
      if (name === '') return '$';
      const value = this.getEnv(name);
      if (value === undefined && this.opts.skipUnsetEnv) return `$${name}`;
      return value ?? '';
    }

    this.sc.next(); // '{'
    const first = this.sc.peek();
    if (first === undefined) throw new LexFailure("syntax error: missing '}'");
    if (first === '{' || first === '}' || first === ':') throw new LexFailure('syntax error: bad substitution');
    const name = this.processName();
    let ch = this.sc.next();
    if (ch === undefined) throw new LexFailure("syntax error: missing '}'");
    let modifier = ch;

    if (ch === '}') {
      const value = this.getEnv(name);
      if (value === undefined && this.opts.skipUnsetEnv) return `\${${name}}`;
      return value ?? '';
    }

    if (ch === '/') {
      const all = this.sc.peek() === '/';
      if (all) this.sc.next();
      const pattern = this.readUntil('/', true, "syntax error: missing '/' in ${}");
      const replacement = this.readUntil('}', false, "syntax error: missing '}'");
      const value = this.getEnv(name);
      if (value === undefined && this.opts.skipUnsetEnv) return `\${${name}/${all ? '/' : ''}${pattern}/${replacement}}`;
      return replacePattern(value ?? '', pattern, replacement, all, this.escapeToken);
    }

    let nullIsUnset = false;
    if (ch === ':') {
      nullIsUnset = true;
      ch = this.sc.next();
      if (ch === undefined) throw new LexFailure("syntax error: missing '}'");
      modifier += ch;
    }
    if (!'+-?#%'.includes(ch) || ch.length !== 1) {
      throw new LexFailure(`unsupported modifier (${modifier}) in substitution`);
    }
    const patternOp = ch === '#' || ch === '%';
    if (nullIsUnset && patternOp) throw new LexFailure(`unsupported modifier (${modifier}) in substitution`);

    let word = this.readUntil('}', patternOp, "syntax error: missing '}'");
    const value = this.getEnv(name);
    if (value === undefined && this.opts.skipUnsetEnv) return `\${${name}${modifier}${word}}`;
    const isUnset = value === undefined || (nullIsUnset && value === '');

    switch (ch) {
      case '-':
        return isUnset ? word : value!;
      case '+':
        return isUnset ? '' : word;
      case '?':
        if (value === undefined) throw new LexFailure(`${name}: ${word || 'is not allowed to be unset'}`);
        if (isUnset) throw new LexFailure(`${name}: ${word || 'is not allowed to be empty'}`);
        return value;
      default: {
        // '#'/'%' remove the shortest matching prefix/suffix; '##'/'%%' the longest.
        const greedy = word.startsWith(ch);
        if (greedy) word = word.slice(1);
        return ch === '#'
          ? trimPrefixPattern(value ?? '', word, greedy, this.escapeToken)
          : trimSuffixPattern(value ?? '', word, greedy, this.escapeToken);
      }
    }
  }

  private readUntil(stop: string, rawEscapes: boolean, eofMessage: string): string {
    try {
      return this.processStopOn(stop, rawEscapes).result;
    } catch (err) {
      if (err instanceof LexFailure && this.sc.peek() === undefined) throw new LexFailure(eofMessage);
      throw err;
    }
  }
}

function run(word: string, env: ShellEnv, opts: ShellLexOptions = {}): ProcessWordResult {
  const escapeToken = opts.escapeToken ?? '\\';
  if (escapeToken !== '\\' && escapeToken !== '`') {
    throw new InvalidArgumentError(`invalid escape token '${escapeToken}' does not match \` or \\`, 'escapeToken');
  }
  const sw = new ShellWord(word, env, opts);
  try {
    const { result, words } = sw.process();
    return { result, words, matched: sw.matched, unmatched: sw.unmatched };
  } catch (err) {
    if (err instanceof LexFailure) throw new ShellLexError(word, err.message);
    throw err;
  }
}

/** Expands `word` as one string (quotes removed, variables substituted, whitespace kept). */
export function processWord(word: string, env: ShellEnv, opts?: ShellLexOptions): string {
  return run(word, env, opts).result;
}

/** Expands `word` and splits it into fields; unquoted expansions are split on whitespace. */
export function processWords(word: string, env: ShellEnv, opts?: ShellLexOptions): string[] {
  return run(word, env, opts).words;
}

/** Like processWord/processWords together, also reporting which variables were (un)matched. */
export function processWordWithMatches(word: string, env: ShellEnv, opts?: ShellLexOptions): ProcessWordResult {
  return run(word, env, opts);
}

/** Builds an env map from `NAME=value` entries (later entries win), like Go's EnvsFromSlice. */
export function envFromList(list: readonly string[]): Map<string, string> {
  const env = new Map<string, string>();
  for (const entry of list) {
    const i = entry.indexOf('=');
    if (i < 0) env.set(entry, '');
    else env.set(entry.slice(0, i), entry.slice(i + 1));
  }
  return env;
}
