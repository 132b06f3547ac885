import { processWords } from '../shell/lex.js';
import type { Heredoc } from './types.js';

/** `[fd]<<[-]WORD` as one shell word; the word itself may not contain `<`. */
const HEREDOC_WORD = /^(\d*)<<(-?)([^<]*)$/;

/** Heredoc syntax always uses `\` as the escape, whatever the escape directive says. */
const HEREDOC_ESCAPE = '\\';

/**
 * Parses one shell word as a heredoc marker (`<<EOF`, `<<-EOF`, `3<<"EOF"`).
 * Returns undefined when the word is not a heredoc marker. The content is
 * left empty. Throws ShellLexError when the delimiter cannot be lexed.
 */
export function parseHeredoc(word: string): Omit<Heredoc, 'content'> | undefined {
  const m = HEREDOC_WORD.exec(word);
  if (!m) return undefined;
  const rest = m[3]!;
  if (rest === '') return undefined;
  const opts = { escapeToken: HEREDOC_ESCAPE, skipUnsetEnv: true };
  const words = processWords(rest, {}, opts);
  if (words.length !== 1) return undefined;
  const rawWords = processWords(rest, {}, { ...opts, rawQuotes: true });
  if (rawWords.length !== 1) return undefined;
  // Any quoting in the delimiter (quotes present raw but not cooked) disables expansion.
  const quoteCount = (s: string) => (s.match(/['"]/g) ?? []).length;
  const name = words[0]!;
  return {
    name,
    expand: quoteCount(name) === quoteCount(rawWords[0]!),
    chomp: m[2] === '-',
    fileDescriptor: m[1] ? Number.parseInt(m[1], 10) : 0,
  };
}

/** Finds the heredoc markers of an instruction line, in order. Lines that cannot be lexed have none. */
export function heredocsFromLine(line: string): Omit<Heredoc, 'content'>[] {
  let words: string[];
  try {
    words = processWords(line, {}, { escapeToken: HEREDOC_ESCAPE, rawQuotes: true, rawEscapes: true });
  } catch {
    return [];
  }
  const docs: Omit<Heredoc, 'content'>[] = [];
  for (const word of words) {
    const doc = parseHeredoc(word);
    if (doc) docs.push(doc);
  }
  return docs;
}

/** Strips leading tabs from every line (`<<-EOF` semantics). */
export function chompHeredocContent(content: string): string {
  return content
    .split('\n')
    .map((l) => l.replace(/^\t+/, ''))
    .join('\n');
}
