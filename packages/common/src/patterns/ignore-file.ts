import { cleanPattern } from './matcher.js';

/**
 * Parses a `.dockerignore` file as moby does: one pattern per line, a UTF-8
 * BOM dropped, lines starting with `#` (before trimming) skipped as
 * comments, blank lines skipped, surrounding whitespace trimmed, `!` kept
 * for exceptions, paths cleaned and made relative (a leading `/` dropped).
 * Compile the result with PatternMatcher.
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
