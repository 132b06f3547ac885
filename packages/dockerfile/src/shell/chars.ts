/**
 * Character classes as Go's `unicode` package defines them. The Dockerfile
 * parser and shell lexer decide splits and trims with these, so they must not
 * follow JavaScript's own (different) notion of whitespace.
 */

/** Go `unicode.IsSpace`. */
export function isGoSpace(ch: string): boolean {
  const cp = ch.codePointAt(0);
  if (cp === undefined) return false;
  if (cp <= 0xff) return (cp >= 0x09 && cp <= 0x0d) || cp === 0x20 || cp === 0x85 || cp === 0xa0;
  return (
    cp === 0x1680 ||
    (cp >= 0x2000 && cp <= 0x200a) ||
    cp === 0x2028 ||
    cp === 0x2029 ||
    cp === 0x202f ||
    cp === 0x205f ||
    cp === 0x3000
  );
}

const DIGIT = /^\p{Nd}$/u;
const LETTER = /^\p{L}$/u;

/** Go `unicode.IsDigit`. */
export function isGoDigit(ch: string): boolean {
  return ch >= '0' && ch <= '9' ? true : ch.length > 0 && ch > '\x7f' && DIGIT.test(ch);
}

/** Go `unicode.IsLetter`. */
export function isGoLetter(ch: string): boolean {
  if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')) return true;
  return ch.length > 0 && ch > '\x7f' && LETTER.test(ch);
}

/** Go `strings.TrimLeftFunc(s, unicode.IsSpace)`. */
export function trimLeftSpace(s: string): string {
  let i = 0;
  while (i < s.length) {
    const ch = String.fromCodePoint(s.codePointAt(i)!);
    if (!isGoSpace(ch)) break;
    i += ch.length;
  }
  return s.slice(i);
}

/** Go `strings.TrimRightFunc(s, unicode.IsSpace)`; all Go spaces are in the BMP. */
export function trimRightSpace(s: string): string {
  let end = s.length;
  while (end > 0 && isGoSpace(s[end - 1]!)) end--;
  return s.slice(0, end);
}

/** Go `strings.TrimSpace`. */
export function trimSpace(s: string): string {
  return trimRightSpace(trimLeftSpace(s));
}
