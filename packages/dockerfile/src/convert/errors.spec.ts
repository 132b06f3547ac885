import { describeError, type KilnError } from '@kiln/common';
import { describe, expect, it } from 'vitest';
import { convertDockerfile } from './convert.js';

async function failure(text: string, opts = {}): Promise<KilnError> {
  const err = await convertDockerfile(text, { filename: 'app.Dockerfile', ...opts }).then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!err) throw new Error('expected the conversion to fail');
  return err as KilnError;
}

describe('errors users can act on', () => {
  it.each([
    ['unknown instruction, with a suggestion', 'FROM scratch\nCOPPY a /a\n', 2, /unknown instruction: COPPY \(did you mean copy\?\)/i, 1],
    ['unknown flag, with a suggestion', 'FROM scratch\nCOPY --chmown=1 a /a\n', 2, /unknown flag: chmown \(did you mean --chown\?/, 6],
    ['malformed flag', 'FROM scratch\nCOPY --link=maybe a /a\n', 2, /expecting boolean value for flag link/, 6],
    ['missing stage index', 'FROM scratch\nCOPY --from=3 /a /a\n', 2, /invalid stage index 3/, 1],
    ['cyclic --from', 'FROM scratch AS a\nCOPY --from=a /x /x\n', 2, /circular dependency detected on stage: a/, 1],
    ['RUN --mount from a later stage', 'FROM scratch AS a\nRUN --mount=from=b,target=/b true\nFROM scratch AS b\nFROM a\n', 2, /cannot mount from stage "b" to "\/b", stage needs to be defined before current command/, 18],
    ['--from a later stage', 'FROM scratch AS a\nCOPY --from=b /x /x\nFROM scratch AS b\nFROM a\n', 2, /cannot copy from stage "b", it needs to be defined before current stage "a"/, 13],
    ['unterminated heredoc', 'FROM scratch\nRUN <<EOF\necho hi\n', 2, /unterminated heredoc/, 1],
    ['unterminated quote in a variable', 'FROM scratch\nENV A="unterminated\n', 2, /unexpected end of statement|quote/i, 1],
    ['empty Dockerfile', '# only a comment\n', 1, /file with no instructions/, 1],
    ['invalid JSON form for SHELL', 'FROM scratch\nSHELL /bin/bash -c\n', 2, /SHELL requires the arguments to be in JSON form/, 1],
    ['bad mount option', 'FROM scratch\nRUN --mount=type=cache,target=/c,sharing=sometimes true\n', 2, /unsupported sharing value "sometimes"/, 5],
  ])('%s', async (_name, text, line, message, column) => {
    const err = await failure(text);
    expect(err.code).toBe('source');
    expect(err.details).toMatchObject({ file: 'app.Dockerfile', line, column, sourceLine: text.split('\n')[line - 1] });
    expect(err.message).toMatch(message);
    const shown = describeError(err);
    expect(shown).toContain(`(app.Dockerfile:${line}:${column})\n ${line} | ${text.split('\n')[line - 1]}`);
  });

  it('names a missing --target stage with a suggestion', async () => {
    const err = await failure('FROM scratch AS build\nFROM scratch AS release\n', { target: 'relase' });
    expect(err.code).toBe('invalid_argument');
    expect(err.message).toBe('target stage "relase" could not be found (did you mean release?)');
  });
});
