import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SourceError } from '@kiln/common';
import { conformanceAvailable, conformancePath } from '../testing/fixtures/conformance.js';
import { parseInstructions } from '../instructions/parse.js';
import { dumpAST, dumpNode } from './dump.js';
import { chompHeredocContent, parseHeredoc } from './heredoc.js';
import { parseDockerfile } from './parser.js';
import { decodeDockerfile, encodeDockerfileText, goQuote } from './text.js';

const shared = conformanceAvailable('parser conformance (dockerfile-parser, dockerfile-parser-negative)');

function caseDirs(kind: string): string[] {
  if (!shared) return [];
  const dir = conformancePath(kind);
  return readdirSync(dir, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort();
}

describe.skipIf(!shared)('parser conformance: dockerfile-parser', () => {
  const cases = caseDirs('dockerfile-parser');
  it('has cases', () => expect(cases.length).toBeGreaterThan(0));
  for (const name of cases) {
    it(name, () => {
      const dir = conformancePath('dockerfile-parser', name);
      // Read as bytes and decode like Go would (invalid UTF-8 survives as \xNN in the dump).
      const ast = parseDockerfile(readFileSync(join(dir, 'Dockerfile')), { filename: `${name}/Dockerfile` });
      const expected = decodeDockerfile(readFileSync(join(dir, 'result')));
      expect(dumpAST(ast)).toBe(expected);
    });
  }
});

describe.skipIf(!shared)('parser conformance: dockerfile-parser-negative', () => {
  const cases = caseDirs('dockerfile-parser-negative');
  it('has cases', () => expect(cases.length).toBeGreaterThan(0));
  for (const name of cases) {
    it(name, () => {
      const file = conformancePath('dockerfile-parser-negative', name, 'Dockerfile');
      let caught: unknown;
      try {
        parseInstructions(parseDockerfile(readFileSync(file), { filename: 'Dockerfile' }));
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(SourceError);
      const err = caught as SourceError;
      expect(err.details.file).toBe('Dockerfile');
      expect(err.details.line).toBeGreaterThanOrEqual(1);
      expect(err.message.length).toBeGreaterThan(0);
    });
  }

  it('env_no_value names line 3', () => {
    const file = conformancePath('dockerfile-parser-negative', 'env_no_value', 'Dockerfile');
    expect(() => parseDockerfile(readFileSync(file))).toThrow(/ENV must have two arguments/);
    try {
      parseDockerfile(readFileSync(file));
    } catch (err) {
      expect((err as SourceError).details.line).toBe(3);
    }
  });
});

function parse(text: string) {
  return parseDockerfile(text, { filename: 'test/Dockerfile' });
}

function errorOf(fn: () => unknown): SourceError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(SourceError);
    return err as SourceError;
  }
  throw new Error('expected an error');
}

describe('parser', () => {
  it('records directives only at the top', () => {
    const ast = parse('# syntax=docker/dockerfile:1\n# CHECK = skip=all\n#escape=`\nFROM a\n# escape=\\\nRUN x `\n  y\n');
    expect(ast.directives).toEqual({ syntax: 'docker/dockerfile:1', check: 'skip=all', escape: '`' });
    expect(dumpAST(ast)).toBe('(from "a")\n(run "x   y")\n');
  });

  it('stops looking for directives after a comment or blank line', () => {
    expect(parse('# hello\n# escape=`\nFROM a\n').directives.escape).toBe('\\');
    expect(parse('\n# escape=`\nFROM a\n').directives.escape).toBe('\\');
    expect(parse('# unknown=1\n# escape=`\nFROM a\n').directives.escape).toBe('\\');
  });

  it('rejects bad or repeated directives', () => {
    const e1 = errorOf(() => parse('# escape=x\nFROM a'));
    expect(e1.message).toMatch(/invalid escape token/);
    expect(e1.details.line).toBe(1);
    const e2 = errorOf(() => parse('# syntax=a\n# syntax=b\nFROM a'));
    expect(e2.message).toMatch(/only one syntax parser directive/);
    expect(e2.details.line).toBe(2);
  });

  it('keeps line numbers across continuations, comments and blank lines', () => {
    const ast = parse('FROM a\n\n# c\nRUN a \\\n  # inner comment\n\n  b\nCMD x\n');
    expect(ast.children.map((n) => [n.value, n.startLine, n.endLine])).toEqual([
      ['from', 1, 1],
      ['run', 4, 7],
      ['cmd', 8, 8],
    ]);
    expect(ast.children[1]!.original).toBe('RUN a   b');
    expect(ast.children[1]!.comments).toEqual(['c']);
    expect(ast.warnings).toEqual([{ message: 'Empty continuation line found in: RUN a   b', line: 7 }]);
  });

  it('handles CRLF line endings and a BOM', () => {
    const ast = parse('\ufeffFROM a\r\nRUN b \\\r\n c\r\n');
    expect(dumpAST(ast)).toBe('(from "a")\n(run "b  c")\n');
  });

  it('distinguishes JSON and shell forms', () => {
    const ast = parse('FROM a\nCMD ["a", "b"]\nCMD [a]\nENTRYPOINT  [ ]\nSHELL ["sh", "-c"]\nRUN ["x"] y\n');
    expect(ast.children.map((n) => n.json)).toEqual([false, true, false, true, true, false]);
    expect(ast.children[5]!.next).toEqual(['["x"] y']);
  });

  it('rejects JSON arrays of non-strings', () => {
    const e = errorOf(() => parse('FROM a\nCMD ["a", 1]'));
    expect(e.message).toMatch(/arrays must be comprised of strings only/);
    expect(e.details.line).toBe(2);
    expect(() => parse('FROM a\nCOPY [["a"], "b"]')).toThrow(/strings only/);
  });

  it('rejects unknown instructions with a hint', () => {
    const e = errorOf(() => parse('FROM a\n\nRUNN echo'));
    expect(e.message).toBe('unknown instruction: RUNN (did you mean RUN?)');
    expect(e.details).toMatchObject({ file: 'test/Dockerfile', line: 3 });
    // As BuildKit: the word as written, the hint in its case (mixed case gives lower case), none when too far.
    expect(errorOf(() => parse('FROM scratch\nFNTRYPOINT ["x"]')).message).toBe('unknown instruction: FNTRYPOINT (did you mean ENTRYPOINT?)');
    expect(errorOf(() => parse('FROM scratch\nexpse 80')).message).toBe('unknown instruction: expse (did you mean expose?)');
    expect(errorOf(() => parse('FROM scratch\nCoppy a b')).message).toBe('unknown instruction: Coppy (did you mean copy?)');
    expect(errorOf(() => parse('FROM scratch\nFROBNICATE a')).message).toBe('unknown instruction: FROBNICATE');
    expect(errorOf(() => parse('FROM a\nONBUILD FOO bar')).message).toMatch(/unknown instruction: FOO/);
  });

  it('rejects empty files and continuation at EOF without an instruction', () => {
    expect(errorOf(() => parse('')).message).toBe('file with no instructions');
    expect(errorOf(() => parse('# only a comment\n\n')).details.line).toBe(2);
    const e = errorOf(() => parse('FROM a\n\\\n\n'));
    expect(e.message).toMatch(/line continuation/);
    expect(e.details.line).toBe(2);
  });

  it('rejects ENV/LABEL without values', () => {
    expect(errorOf(() => parse('FROM a\nLABEL foo')).message).toBe('LABEL must have two arguments');
    expect(errorOf(() => parse('FROM a\nENV a=b c')).message).toBe(
      'Syntax error - can\'t find = in "c". Must be of the form: name=value',
    );
  });

  it('splits flags and keeps quoted flag values whole', () => {
    const ast = parse('FROM --platform=linux/amd64 a AS b\nCOPY --chown="a b" --link -- --x /y\n');
    expect(ast.children[0]!.flags).toEqual(['--platform=linux/amd64']);
    expect(ast.children[0]!.next).toEqual(['a', 'AS', 'b']);
    expect(ast.children[1]!.flags).toEqual(['--chown=a b', '--link']);
    expect(ast.children[1]!.next).toEqual(['--x', '/y']);
  });

  it('parses ONBUILD with a nested node', () => {
    const ast = parse('FROM a\nONBUILD --x RUN --mount=type=cache,target=/c echo hi\n');
    const n = ast.children[1]!;
    expect(n.flags).toEqual(['--x']);
    expect(n.child).toMatchObject({ value: 'run', flags: ['--mount=type=cache,target=/c'], next: ['echo hi'] });
    expect(dumpNode(n)).toBe('(onbuild ["--x"] (run ["--mount=type=cache,target=/c"] "echo hi"))');
  });

  it('dumps non-UTF-8 bytes and control characters like Go', () => {
    const bytes = Uint8Array.from([...Buffer.from('FROM a\nRUN echo '), 0xff, 0xc3, 0x28, 0x7f, 0x20, 0xc2, 0xa0, 0x78, 0x0a]);
    const ast = parseDockerfile(bytes);
    expect(dumpAST(ast)).toBe('(from "a")\n(run "echo \\xff\\xc3(\\x7f \\u00a0x")\n');
    expect(encodeDockerfileText(ast.children[1]!.next[0]!)).toEqual(
      Uint8Array.from([...Buffer.from('echo '), 0xff, 0xc3, 0x28, 0x7f, 0x20, 0xc2, 0xa0, 0x78]),
    );
    expect(goQuote('\x00\x07\u{1F600}\u200b\ufeff')).toBe('"\\x00\\a😀\\u200b\\ufeff"');
  });
});

describe('heredocs', () => {
  it('reads a heredoc body for RUN', () => {
    const ast = parse('FROM a\nRUN <<EOF\necho hi\n  echo $X\nEOF\nCMD x\n');
    const run = ast.children[1]!;
    expect(run.heredocs).toEqual([{ name: 'EOF', content: 'echo hi\n  echo $X\n', expand: true, chomp: false, fileDescriptor: 0 }]);
    expect([run.startLine, run.endLine]).toEqual([2, 5]);
    expect(ast.children[2]).toMatchObject({ value: 'cmd', startLine: 6 });
    expect(dumpNode(run)).toBe('(run "<<EOF")');
  });

  it('reads several heredocs on one line, in order, with quoting and chomping', () => {
    const src = [
      'FROM a',
      `COPY <<one 3<<-"two" <<'three' /dest/`,
      'a',
      'one',
      '\tb',
      '\t\ttwo',
      'c $X',
      'three',
      'RUN x',
    ].join('\n');
    const ast = parse(src);
    const copy = ast.children[1]!;
    expect(copy.heredocs.map((h) => [h.name, h.content, h.expand, h.chomp, h.fileDescriptor])).toEqual([
      ['one', 'a\n', true, false, 0],
      ['two', '\tb\n', false, true, 3],
      ['three', 'c $X\n', false, false, 0],
    ]);
    expect(copy.endLine).toBe(8);
    expect(ast.children[2]!.startLine).toBe(9);
    expect(chompHeredocContent('\tb\n\t\tc\n d\n')).toBe('b\nc\n d\n');
  });

  it('treats partly quoted delimiters as quoted', () => {
    expect(parseHeredoc('<<E"O"F')).toMatchObject({ name: 'EOF', expand: false });
    expect(parseHeredoc('<<EOF')).toMatchObject({ name: 'EOF', expand: true });
    expect(parseHeredoc('<<')).toBeUndefined();
    expect(parseHeredoc('a<<EOF')).toBeUndefined();
    expect(parseHeredoc('<<EOF<')).toBeUndefined();
  });

  it('ignores heredoc syntax in JSON form, quotes and other instructions', () => {
    const ast = parse('FROM a\nRUN ["cat", "<<EOF"]\nRUN echo "<<EOF"\nCMD cat <<EOF\nENV a=b\n');
    expect(ast.children.every((n) => n.heredocs.length === 0)).toBe(true);
    expect(ast.children.length).toBe(5);
  });

  it('attaches heredocs of an ONBUILD trigger', () => {
    const ast = parse('FROM a\nONBUILD RUN <<EOF\nhi\nEOF\n');
    expect(ast.children[1]!.heredocs).toEqual([{ name: 'EOF', content: 'hi\n', expand: true, chomp: false, fileDescriptor: 0 }]);
    expect(ast.children[1]!.child!.heredocs.length).toBe(1);
  });

  it('rejects unterminated heredocs, naming the instruction line', () => {
    const e = errorOf(() => parse('FROM a\nRUN <<EOF\nhello\n'));
    expect(e.message).toMatch(/unterminated heredoc/);
    expect(e.details.line).toBe(2);
  });
});
