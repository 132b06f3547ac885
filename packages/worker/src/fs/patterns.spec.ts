import { globToRegExp, matchComponent, PatternMatcher } from './patterns.js';

describe('PatternMatcher', () => {
  it('matches Docker-style globs and parents', () => {
    const m = new PatternMatcher(['*.txt', 'dir/**/x', 'build']);
    expect(m.matches('a.txt')).toBe(true);
    expect(m.matches('sub/a.txt')).toBe(false);
    expect(m.matches('dir/x')).toBe(true);
    expect(m.matches('dir/a/b/x')).toBe(true);
    expect(m.matches('build/out/bin')).toBe(true);
    expect(m.matches('/a.txt')).toBe(true);
    expect(m.matches('./a.txt')).toBe(true);
  });

  it('lets later ! patterns re-include', () => {
    const m = new PatternMatcher(['*.md', '!README.md']);
    expect(m.matches('a.md')).toBe(true);
    expect(m.matches('README.md')).toBe(false);
    expect(m.hasExceptions).toBe(true);
  });

  it('tells whether a directory may hold matches', () => {
    const m = new PatternMatcher(['src/**/*.ts', 'docs/a.md']);
    expect(m.mayMatchBelow('src')).toBe(true);
    expect(m.mayMatchBelow('src/deep/er')).toBe(true);
    expect(m.mayMatchBelow('docs')).toBe(true);
    expect(m.mayMatchBelow('other')).toBe(false);
  });

  it('compiles globs', () => {
    expect(globToRegExp('a?c').test('abc')).toBe(true);
    expect(globToRegExp('a?c').test('a/c')).toBe(false);
    expect(globToRegExp('[!a]x').test('bx')).toBe(true);
    expect(globToRegExp('[!a]x').test('ax')).toBe(false);
    expect(globToRegExp('a\\*').test('a*')).toBe(true);
    expect(globToRegExp('a\\*').test('ab')).toBe(false);
    expect(globToRegExp('**').test('any/thing')).toBe(true);
    expect(matchComponent('*.go', 'main.go')).toBe(true);
    expect(matchComponent('f.(x)', 'f.(x)')).toBe(true);
  });
});
