/**
 * C0 controls but tab and newline, DEL, C1 controls (U+0080-U+009F: some
 * terminals read U+009B as CSI) and the bidi overrides that reorder what a
 * reader sees (U+202A-U+202E, U+2066-U+2069).
 */
// eslint-disable-next-line no-control-regex
const UNSAFE = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/g;

/**
 * Text from a build (a Dockerfile line, a step name, a step's output, an
 * error message) made safe to write to a terminal: every control character
 * but `\n` and `\t` is shown escaped (`\x1b`, `\u202e`), so a hostile
 * Dockerfile or step cannot move the cursor, retitle the window, write the
 * clipboard (OSC 52) or hide text. The printers' own ANSI is added after.
 */
export function escapeControl(text: string): string {
  return text.replace(UNSAFE, (c) => {
    const code = c.charCodeAt(0);
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}
