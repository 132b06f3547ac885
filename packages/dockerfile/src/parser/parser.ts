/**
 * The Dockerfile parser: text to a flat list of instruction nodes, following
 * the behaviour of BuildKit's `frontend/dockerfile/parser`.
 */
import { SourceError } from '@kiln/common';
import { ShellLexError } from '../shell/lex.js';
import { trimLeftSpace, trimSpace } from '../shell/chars.js';
import { heredocsFromLine } from './heredoc.js';
import { dispatch, extractBuilderFlags, LineParseError, splitWhitespace } from './line-parsers.js';
import { suggestWord } from '../instructions/suggest.js';
import { decodeDockerfile } from './text.js';
import type { Directives, DockerfileAST, Heredoc, Node, ParseOptions, ParseWarning } from './types.js';

export const DEFAULT_ESCAPE_TOKEN = '\\';

const DIRECTIVE = /^#[\t\n\f\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*([^\n]+?)[\t\n\f\r ]*$/;
const KNOWN_DIRECTIVES = new Set(['syntax', 'escape', 'check']);

/** Instructions that may carry heredocs (directly or as the ONBUILD trigger). */
const HEREDOC_INSTRUCTIONS = new Set(['add', 'copy', 'run']);

/** All instruction keywords the parser accepts. */
export const INSTRUCTIONS: readonly string[] = Object.keys(dispatch);

/** Splits text into lines, each keeping its `\n` (like BuildKit's line scanner). */
function splitLines(text: string): string[] {
  const lines: string[] = [];
  let start = 0;
  for (;;) {
    const nl = text.indexOf('\n', start);
    if (nl < 0) break;
    lines.push(text.slice(start, nl + 1));
    start = nl + 1;
  }
  if (start < text.length) lines.push(text.slice(start));
  return lines;
}

/** Go `bytes.TrimRight(s, "\r\n")`. */
function trimNewline(s: string): string {
  let end = s.length;
  while (end > 0 && (s[end - 1] === '\n' || s[end - 1] === '\r')) end--;
  return s.slice(0, end);
}

function isComment(line: string): boolean {
  return trimLeftSpace(line).startsWith('#');
}

function isEmptyContinuationLine(line: string): boolean {
  return trimLeftSpace(trimNewline(line)).length === 0;
}

/**
 * Strips a trailing line-continuation escape token (optionally followed by
 * blanks). An escaped escape token (`\\`) at the end does not continue.
 * Returns the line and whether the instruction ends here.
 */
function trimContinuation(line: string, escapeToken: string): [string, boolean] {
  let end = line.length;
  while (end > 0 && (line[end - 1] === ' ' || line[end - 1] === '\t')) end--;
  if (end === 0 || line[end - 1] !== escapeToken) return [line, true];
  if (end === 1) return ['', false];
  if (line[end - 2] === escapeToken) return [line, true];
  return [line.slice(0, end - 1), false];
}

/** Levenshtein distance, for "did you mean" hints. */
/** BuildKit's message: the instruction as written, with a hint in the same case. */
function unknownInstruction(cmd: string): string {
  return `unknown instruction: ${cmd}${suggestWord(cmd, INSTRUCTIONS, false)}`;
}

class DockerfileParser {
  private readonly directives: Directives = { escape: DEFAULT_ESCAPE_TOKEN };
  private directivesDone = false;
  private readonly seenDirectives = new Set<string>();
  private readonly directiveLines: NonNullable<DockerfileAST['directiveLines']> = {};
  private readonly warnings: ParseWarning[] = [];
  private readonly children: Node[] = [];
  private readonly lines: string[];
  private index = 0;
  /** 1-based number of the last line read. */
  private currentLine = 0;

  constructor(
    text: string,
    private readonly filename: string,
  ) {
    this.lines = splitLines(text);
  }

  private error(message: string, line: number, cause?: unknown): SourceError {
    return new SourceError(message, this.filename, Math.max(1, line), cause === undefined ? undefined : { cause });
  }

  private nextLine(): string | undefined {
    const line = this.lines[this.index];
    if (line === undefined) return undefined;
    this.index++;
    this.currentLine++;
    return line;
  }

  /** Parser directives are only recognised until the first line that is not one. */
  private possibleDirective(line: string): void {
    if (this.directivesDone) return;
    const m = DIRECTIVE.exec(line);
    const key = m?.[1]?.toLowerCase();
    if (!m || key === undefined || !KNOWN_DIRECTIVES.has(key)) {
      this.directivesDone = true;
      return;
    }
    if (this.seenDirectives.has(key)) {
      throw this.error(`only one ${key} parser directive can be used`, this.currentLine);
    }
    this.seenDirectives.add(key);
    this.directiveLines[key as 'syntax' | 'escape' | 'check'] = this.currentLine;
    const value = m[2]!;
    if (key === 'escape') {
      if (value !== '`' && value !== '\\') {
        throw this.error(`invalid escape token '${value}' does not match \` or \\`, this.currentLine);
      }
      this.directives.escape = value;
    } else if (key === 'syntax') {
      this.directives.syntax = value;
    } else {
      this.directives.check = value;
    }
  }

  /** Trims the newline (and leading space on first lines), checks for a directive, and blanks out comments. */
  private processLine(raw: string, stripLeft: boolean): string {
    let token = trimNewline(raw);
    if (stripLeft) token = trimLeftSpace(token);
    this.possibleDirective(token);
    return isComment(token) ? '' : token;
  }

  parse(): DockerfileAST {
    let comments: string[] = [];
    for (let raw = this.nextLine(); raw !== undefined; raw = this.nextLine()) {
      if (this.currentLine === 1 && raw.startsWith('\ufeff')) raw = raw.slice(1);
      if (isComment(raw)) {
        const comment = trimSpace(trimLeftSpace(raw).slice(1));
        if (comment === '') comments = [];
        else comments.push(comment);
      }
      const startLine = this.currentLine;
      const first = this.processLine(raw, true);
      let [line, endOfLine] = trimContinuation(first, this.directives.escape);
      if (endOfLine && line.length === 0) continue;

      let hasEmptyContinuationLine = false;
      while (!endOfLine) {
        const next = this.nextLine();
        if (next === undefined) break;
        const processed = this.processLine(next, false);
        if (isComment(next)) continue;
        if (isEmptyContinuationLine(processed)) {
          hasEmptyContinuationLine = true;
          continue;
        }
        const [cont, eol] = trimContinuation(processed, this.directives.escape);
        line += cont;
        endOfLine = eol;
      }

      if (trimSpace(line) === '') {
        throw this.error('unexpected end of file: line continuation without an instruction', startLine);
      }
      if (hasEmptyContinuationLine) {
        this.warnings.push({ message: `Empty continuation line found in: ${line}`, line: this.currentLine });
      }

      const node = this.newNode(line, startLine, comments);
      this.readHeredocs(node, line, startLine);
      node.endLine = this.currentLine;
      if (node.child) node.child.endLine = this.currentLine;
      this.children.push(node);
      comments = [];
    }

    if (this.children.length === 0) {
      throw this.error('file with no instructions', this.currentLine);
    }
    return {
      filename: this.filename,
      directives: { ...this.directives },
      directiveLines: { ...this.directiveLines },
      children: this.children,
      warnings: this.warnings,
    };
  }

  private newNode(line: string, startLine: number, comments: string[]): Node {
    const trimmed = trimSpace(line);
    const [cmd, after] = splitWhitespace(trimmed, 2) as [string, string | undefined];
    let flags: string[] = [];
    let args = '';
    if (after !== undefined) {
      const extracted = extractBuilderFlags(after);
      flags = extracted.flags;
      args = trimSpace(extracted.rest);
    }
    const value = cmd.toLowerCase();
    const parseArgs = dispatch[value];
    if (!parseArgs) throw this.error(unknownInstruction(cmd), startLine);
    let parsed;
    try {
      parsed = parseArgs(args, this.directives.escape);
    } catch (err) {
      if (err instanceof LineParseError) throw this.error(err.message, startLine, err);
      throw err;
    }
    const node: Node = {
      value,
      original: line,
      flags,
      next: parsed.next,
      json: parsed.json,
      heredocs: [],
      comments,
      startLine,
      endLine: startLine,
    };
    if (parsed.subCommand !== undefined) node.child = this.newNode(parsed.subCommand, startLine, []);
    return node;
  }

  private readHeredocs(node: Node, line: string, startLine: number): void {
    const target = node.child ?? node;
    if (!HEREDOC_INSTRUCTIONS.has(target.value) || target.json || !line.includes('<<')) return;
    let markers;
    try {
      markers = heredocsFromLine(line);
    } catch (err) {
      if (err instanceof ShellLexError) throw this.error(`invalid heredoc: ${err.message}`, startLine, err);
      throw err;
    }
    for (const marker of markers) {
      let content = '';
      let terminated = false;
      for (let raw = this.nextLine(); raw !== undefined; raw = this.nextLine()) {
        let candidate = trimNewline(raw);
        if (marker.chomp) candidate = candidate.replace(/^\t+/, '');
        if (candidate === marker.name) {
          terminated = true;
          break;
        }
        content += raw;
      }
      if (!terminated) throw this.error(`unterminated heredoc ${marker.name}`, startLine);
      const heredoc: Heredoc = { ...marker, content };
      // The heredocs belong to the instruction that uses them (the trigger for ONBUILD); keep both views.
      node.heredocs.push(heredoc);
      if (target !== node) target.heredocs.push(heredoc);
    }
  }
}

/**
 * Parses a Dockerfile. Text may be a string or the file's bytes (decoded as
 * UTF-8, invalid bytes kept; see decodeDockerfile). Throws SourceError with
 * the file name and 1-based line.
 */
export function parseDockerfile(text: string | Uint8Array, opts: ParseOptions = {}): DockerfileAST {
  const source = typeof text === 'string' ? text : decodeDockerfile(text);
  return new DockerfileParser(source, opts.filename ?? 'Dockerfile').parse();
}
