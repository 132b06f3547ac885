import { syntaxDirective } from './syntax-directive.js';

describe('syntaxDirective', () => {
  it('finds # syntax= among the leading directives, with its line', () => {
    expect(syntaxDirective('# syntax=kiln-yaml.v0\nbase: busybox\n')).toEqual({ value: 'kiln-yaml.v0', line: 1 });
    expect(syntaxDirective('# escape=`\r\n#  SYNTAX = docker/dockerfile:1\r\nFROM x\n')).toEqual({ value: 'docker/dockerfile:1', line: 2 });
    expect(syntaxDirective('// syntax=x.v1\n{}')).toEqual({ value: 'x.v1', line: 1 });
  });

  it('ignores a syntax comment after the first non-directive line', () => {
    expect(syntaxDirective('FROM busybox\n# syntax=kiln-yaml.v0\n')).toBeUndefined();
    expect(syntaxDirective('# a comment\n# syntax=kiln-yaml.v0\n')).toBeUndefined();
    expect(syntaxDirective('# syntax=\nFROM x')).toBeUndefined();
  });
});
