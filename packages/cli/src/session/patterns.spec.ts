import { describe, expect, it } from 'vitest';
import { cleanRelPath, compilePatterns, parseIgnoreFile } from './patterns.js';

const m = (...patterns: string[]) => compilePatterns(patterns);

describe('compilePatterns().matches', () => {
  it.each([
    // [pattern, path, matches]
    ['foo', 'foo', true],
    ['foo', 'foo/bar/baz', true], // a directory pattern matches everything under it
    ['foo', 'foobar', false],
    ['foo', 'x/foo', false], // anchored at the root
    ['/foo', 'foo', true], // leading slash dropped
    ['./foo/../bar', 'bar', true], // cleaned
    ['foo/', 'foo/x', true],
    ['*.go', 'main.go', true],
    ['*.go', 'cmd/main.go', false], // * does not cross /
    ['*/*.go', 'cmd/main.go', true],
    ['*', 'anything/below', true],
    ['?.txt', 'a.txt', true],
    ['?.txt', 'ab.txt', false],
    ['?', '/', false],
    ['**', 'a/b/c', true],
    ['**/*.go', 'main.go', true], // ** matches zero directories
    ['**/*.go', 'a/b/main.go', true],
    ['a/**/b', 'a/b', true],
    ['a/**/b', 'a/x/y/b', true],
    ['a/**/b', 'a/x/y/c', false],
    ['a/**', 'a/x', true],
    ['a/**', 'a', false],
    ['**/node_modules', 'node_modules/x/y.js', true],
    ['**/node_modules', 'pkg/node_modules/x', true],
    ['[a-c].txt', 'b.txt', true],
    ['[a-c].txt', 'd.txt', false],
    ['[!a-c].txt', 'd.txt', true],
    ['[^a-c].txt', 'a.txt', false],
    ['a[/]b', 'a/b', false], // classes never match /
    ['\\*.txt', '*.txt', true],
    ['\\*.txt', 'a.txt', false],
    ['file.txt', 'fileXtxt', false], // . is literal
    ['a+b(c)|{d}$', 'a+b(c)|{d}$', true],
    ['élan/*', 'élan/ü', true],
  ])('%s vs %s -> %s', (pattern, path, want) => {
    expect(m(pattern).matches(path)).toBe(want);
  });

  it('lets the last matching pattern win, with ! exceptions', () => {
    const p = m('docs', '!docs/README.md');
    expect(p.matches('docs/guide.md')).toBe(true);
    expect(p.matches('docs/README.md')).toBe(false);
    expect(p.matches('src/a.ts')).toBe(false);
  });

  it('re-excludes after an exception', () => {
    const p = m('*.md', '!README*.md', 'README-secret.md');
    expect(p.matches('CHANGES.md')).toBe(true);
    expect(p.matches('README.md')).toBe(false);
    expect(p.matches('README-secret.md')).toBe(true);
  });

  it('re-includes a whole directory under an excluded one', () => {
    const p = m('**', '!src', 'src/**/*.test.ts');
    expect(p.matches('Dockerfile')).toBe(true);
    expect(p.matches('src/a.ts')).toBe(false);
    expect(p.matches('src/x/a.test.ts')).toBe(true);
  });

  it('an exception before any match has no effect', () => {
    expect(m('!a', 'a').matches('a')).toBe(true);
  });

  it('is empty without patterns, and skips blank ones', () => {
    expect(m().empty).toBe(true);
    expect(m('', '  ').empty).toBe(true);
    expect(m().matches('x')).toBe(false);
  });

  it('rejects malformed patterns naming the field', () => {
    expect(() => compilePatterns(['!'], '.dockerignore')).toThrow(/illegal exclusion pattern/);
    expect(() => compilePatterns(['[abc'], '.dockerignore')).toThrow(/invalid pattern "\[abc"/);
    try {
      compilePatterns(['x\\'], 'excludePatterns');
    } catch (err) {
      expect((err as { details: { field: string } }).details.field).toBe('excludePatterns');
    }
  });
});

describe('partial matches for walkers', () => {
  it('mayMatchUnder tells which directories can hold matches', () => {
    const p = m('src/**/*.ts', 'docs/api/index.md');
    expect(p.mayMatchUnder('src')).toBe(true);
    expect(p.mayMatchUnder('src/deep/er')).toBe(true);
    expect(p.mayMatchUnder('docs')).toBe(true);
    expect(p.mayMatchUnder('docs/api')).toBe(true);
    expect(p.mayMatchUnder('docs/guide')).toBe(false);
    expect(p.mayMatchUnder('node_modules')).toBe(false);
  });

  it('mayMatchUnder holds beneath a directory the pattern matches', () => {
    expect(m('vendor').mayMatchUnder('vendor/a/b')).toBe(true);
    expect(m('*/lib').mayMatchUnder('pkg/lib/x')).toBe(true);
  });

  it('hasExceptionsUnder looks only at ! patterns', () => {
    const p = m('node_modules', '!node_modules/keep/**', 'build');
    expect(p.hasExceptionsUnder('node_modules')).toBe(true);
    expect(p.hasExceptionsUnder('node_modules/drop')).toBe(false);
    expect(p.hasExceptionsUnder('build')).toBe(false);
    expect(m('a', '!**/x').hasExceptionsUnder('a')).toBe(true);
  });
});

describe('parseIgnoreFile', () => {
  it('skips comments and blanks, trims, drops BOM and leading slashes', () => {
    const text = '\uFEFF# comment\n\nnode_modules\n  /dist/  \n! keep.txt\r\n*.log\n #not a comment\n';
    expect(parseIgnoreFile(text)).toEqual(['node_modules', 'dist', '!keep.txt', '*.log', '#not a comment']);
  });
});

describe('cleanRelPath', () => {
  it.each([
    ['./a/b/', 'a/b'],
    ['/a//b', 'a/b'],
    ['a/../../b', 'b'],
    ['.', ''],
    ['', ''],
  ])('%s -> %s', (input, want) => expect(cleanRelPath(input)).toBe(want));
});
