import { describe, expect, it } from 'vitest';
import { parseIgnoreFile } from './ignore-file.js';
import { cleanRelPath, globToRegExp, hasWildcard, matchComponent, PatternMatcher } from './matcher.js';

const m = (...patterns: string[]) => new PatternMatcher(patterns);

describe('PatternMatcher.matches', () => {
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
    ['*.txt', 'a.txt', true],
    ['*.txt', 'sub/a.txt', false],
    ['*.txt', '/a.txt', true], // paths are cleaned too
    ['*.txt', './a.txt', true],
    ['dir/**/x', 'dir/x', true],
    ['dir/**/x', 'dir/a/b/x', true],
    ['build', 'build/out/bin', true],
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

  it('tells whether there are exceptions', () => {
    const p = m('*.md', '!README.md');
    expect(p.matches('a.md')).toBe(true);
    expect(p.matches('README.md')).toBe(false);
    expect(p.hasExceptions).toBe(true);
    expect(m('*.md').hasExceptions).toBe(false);
  });

  it('keeps the cleaned patterns', () => {
    expect(m(' /a/b/ ', '! ./c', '', 'd/../e').patterns).toEqual(['a/b', '!c', 'e']);
  });

  it('rejects malformed patterns naming the field', () => {
    expect(() => new PatternMatcher(['!'], '.dockerignore')).toThrow(/illegal exclusion pattern/);
    expect(() => new PatternMatcher(['[abc'], '.dockerignore')).toThrow(/invalid pattern "\[abc"/);
    try {
      new PatternMatcher(['x\\'], 'excludePatterns');
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
    expect(m('src/**/*.ts', 'docs/a.md').mayMatchUnder('docs')).toBe(true);
    expect(p.mayMatchUnder('')).toBe(true); // the root holds everything
    expect(m('!x').mayMatchUnder('')).toBe(false);
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

  it('cleans paths and keeps exceptions, as Docker does', () => {
    expect(parseIgnoreFile('a/./b/../c\n/abs/path\n!/x/\n\n  \n# c\n**/*.tmp\n')).toEqual(['a/c', 'abs/path', '!x', '**/*.tmp']);
    expect(parseIgnoreFile('')).toEqual([]);
  });

  it('feeds PatternMatcher', () => {
    const p = new PatternMatcher(parseIgnoreFile('*\n!src\nsrc/**/*.test.ts\n'));
    expect(p.matches('README.md')).toBe(true);
    expect(p.matches('src/a.ts')).toBe(false);
    expect(p.matches('src/x/a.test.ts')).toBe(true);
    expect(p.hasExceptionsUnder('src')).toBe(true);
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

describe('globToRegExp, matchComponent, hasWildcard', () => {
  it('compiles globs', () => {
    expect(globToRegExp('a?c').test('abc')).toBe(true);
    expect(globToRegExp('a?c').test('a/c')).toBe(false);
    expect(globToRegExp('[!a]x').test('bx')).toBe(true);
    expect(globToRegExp('[!a]x').test('ax')).toBe(false);
    expect(globToRegExp('a\\*').test('a*')).toBe(true);
    expect(globToRegExp('a\\*').test('ab')).toBe(false);
    expect(globToRegExp('**').test('any/thing')).toBe(true);
    expect(globToRegExp('**').test('new\nline')).toBe(true);
    expect(matchComponent('*.go', 'main.go')).toBe(true);
    expect(matchComponent('f.(x)', 'f.(x)')).toBe(true);
  });

  it('rejects malformed globs, but matchComponent takes them literally', () => {
    expect(() => globToRegExp('a[b')).toThrow(/unterminated character class/);
    expect(() => globToRegExp('a\\')).toThrow(/trailing backslash/);
    expect(matchComponent('a[b', 'a[b')).toBe(true);
    expect(matchComponent('a[b*', 'a[bcd')).toBe(true);
    expect(matchComponent('a\\', 'a\\')).toBe(true);
  });

  it('spots wildcards', () => {
    expect(hasWildcard('a/*.txt')).toBe(true);
    expect(hasWildcard('a?')).toBe(true);
    expect(hasWildcard('[ab]')).toBe(true);
    expect(hasWildcard('plain/path.txt')).toBe(false);
  });
});
