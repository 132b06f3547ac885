import { describe, expect, it } from 'vitest';
import { parseSymbolicMode } from './symbolic-mode.js';

describe('parseSymbolicMode', () => {
  it.each([
    ['u+x', 0o644, false, 0o744],
    ['+x', 0o644, false, 0o755],
    ['go-w', 0o666, false, 0o644],
    ['u=rwx,g=rx,o=', 0o666, false, 0o750],
    ['a+X', 0o644, false, 0o644],
    ['a+X', 0o744, false, 0o755],
    ['a+X', 0o644, true, 0o755],
    ['u+s,+t', 0o755, false, 0o5755],
    ['755', 0o600, false, 0o755],
  ] as const)('%s on %o (dir=%s) gives %o', (spec, current, isDir, want) => {
    expect(parseSymbolicMode(spec)(current, isDir)).toBe(want);
  });

  it.each(['', 'u+q', 'z+x', 'u+x,,g+r', '8777', 'g=u'])('rejects %j naming the mode', (spec) => {
    expect(() => parseSymbolicMode(spec)).toThrow(/invalid chmod mode/);
  });
});
