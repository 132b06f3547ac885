/**
 * The `# syntax=VALUE` directive among a build file's leading directive
 * lines (`# key=value`, also `// key=value` as BuildKit's DetectSyntax
 * accepts), with its 1-based line; undefined when there is none. Reading
 * stops at the first line that is not a directive, so a `# syntax=` further
 * down is an ordinary comment.
 */
export function syntaxDirective(text: string): { value: string; line: number } | undefined {
  const lines = text.split('\n', 64);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/\r$/, '');
    const m = /^(?:#|\/\/)\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(.*?)\s*$/.exec(line);
    if (!m) return undefined;
    if (m[1]!.toLowerCase() === 'syntax' && m[2]) return { value: m[2], line: i + 1 };
  }
  return undefined;
}
