import { InvalidArgumentError } from '@kiln/common';

// A token: printable, no whitespace, no '.', and not containing wildcards.
const TOKEN = /^[^\s.*>]+$/;
const NAME = /^[A-Za-z0-9_-]+$/;

/**
 * Checks a subject and throws InvalidArgumentError (field `subject`) when it
 * is empty, has an empty token or whitespace, or uses wildcards where they
 * are not allowed (`wildcards: false` for publishing). With wildcards, `*`
 * must be a whole token and `>` a whole last token.
 */
export function validateSubject(subject: string, wildcards: boolean): void {
  if (typeof subject !== 'string' || subject.length === 0) {
    throw new InvalidArgumentError('invalid subject: empty', 'subject');
  }
  const tokens = subject.split('.');
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i] as string;
    if (wildcards && t === '*') continue;
    if (wildcards && t === '>' && i === tokens.length - 1) continue;
    if (!TOKEN.test(t)) {
      const why = t === '' ? 'empty token' : /[*>]/.test(t) ? 'misplaced wildcard' : 'bad token';
      throw new InvalidArgumentError(`invalid subject "${subject}": ${why}`, 'subject');
    }
  }
}

/** Checks a queue group, work queue or tier name: `[A-Za-z0-9_-]+`. */
export function validateName(name: string, field: string): void {
  if (typeof name !== 'string' || !NAME.test(name)) {
    throw new InvalidArgumentError(`invalid ${field} "${String(name)}": use letters, digits, "_" and "-"`, field);
  }
}

/** True when the concrete `subject` matches `pattern` (which may use `*` and `>`). */
export function subjectMatches(pattern: string, subject: string): boolean {
  if (pattern === subject) return true;
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    const t = p[i];
    if (t === '>') return s.length > i;
    if (i >= s.length) return false;
    if (t !== '*' && t !== s[i]) return false;
  }
  return p.length === s.length;
}
