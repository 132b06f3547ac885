import { describe, expect, it } from 'vitest';
import { escapeControl } from './escape-control.js';

describe('escapeControl', () => {
  it('keeps printable text, tabs and newlines', () => {
    expect(escapeControl('RUN echo "héllo"\tworld\n✓ done')).toBe('RUN echo "héllo"\tworld\n✓ done');
  });

  it('escapes ESC sequences, CR, BEL, NUL, DEL, C1 and bidi overrides', () => {
    expect(escapeControl('\x1b[2J\x1b]52;c;aGk=\x07')).toBe('\\x1b[2J\\x1b]52;c;aGk=\\x07');
    expect(escapeControl('a\rb\0c\x7fd\u009b31me')).toBe('a\\x0db\\x00c\\x7fd\\x9b31me');
    expect(escapeControl('abc\u202edef')).toBe('abc\\u202edef');
  });
});
