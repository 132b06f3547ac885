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
    ['unknown instruction, with a suggestion', 'FROM scratch\nCOPPY a /a\n', 2, /unknown instruction: COPPY \(did you mean COPY\?\)/, 1],
    ['unknown flag, with a suggestion', 'FROM scratch\nCOPY --chmown=1 a /a\n', 2, /unknown flag: --chmown \(did you mean chown\?\)/, 6],
    ['malformed flag', 'FROM scratch\nCOPY --link=maybe a /a\n', 2, /expecting boolean value for flag --link/, 6],
    ['missing stage index', 'FROM scratch\nCOPY --from=3 /a /a\n', 2, /invalid stage index 3/, 1],
    ['cyclic --from', 'FROM scratch AS a\nCOPY --from=a /x /x\n', 2, /circular dependency detected on stage: a/, 1],
    ['RUN --mount from a later stage', 'FROM scratch AS a\nRUN --mount=from=b,target=/b true\nFROM scratch AS b\nFROM a\n', 2, /cannot mount from stage "b" to "\/b", stage needs to be defined before current command/, 18],
    ['--from a later stage', 'FROM scratch AS a\nCOPY --from=b /x /x\nFROM scratch AS b\nFROM a\n', 2, /cannot copy from stage "b", it needs to be defined before current stage "a"/, 13],
    ['unterminated heredoc', 'FROM scratch\nRUN <<EOF\necho hi\n', 2, /unterminated heredoc/, 1],
    ['unterminated quote in a variable', 'FROM scratch\nENV A="unterminated\n', 2, /unexpected end of statement|quote/i, 1],
    ['empty Dockerfile', '# only a comment\n', 1, /file with no instructions/, 1],
    ['invalid JSON form for SHELL', 'FROM scratch\nSHELL /bin/bash -c\n', 2, /SHELL requires the arguments to be in JSON form/, 1],
    ['a variable in COPY --from', 'FROM scratch\nCOPY --from=$FOO . .\n', 2, /^variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround$/, 6],
    ['a variable in COPY --from of a stage not built', 'FROM scratch AS a\nCOPY --from=${X} . .\nFROM scratch\n', 2, /variable expansion is not supported for --from/, 6],
    ['a variable in RUN --mount from=', 'FROM scratch\nENV t=test\nRUN --mount=from=$t,target=/x true\n', 3, /'from' doesn't support variable expansion, define alias stage instead/, 5],
    ['a mistyped RUN flag', 'FROM scratch\nRUN --mont=target=/t,type=tmpfs true\n', 2, /^RUN: unknown flag: --mont \(did you mean mount\?\)$/, 5],
    ['a mistyped mount key', 'FROM scratch\nRUN --mount=typ=tmpfs true\n', 2, /unexpected key 'typ' in 'typ=tmpfs' \(did you mean type\?\)/, 5],
    ['a mistyped mount type', 'FROM scratch\nRUN --mount=type=tmp true\n', 2, /unsupported mount type "tmp" \(did you mean tmpfs\?\)/, 5],
    ['a non-octal --chmod', 'FROM scratch\nADD --chmod=64a foo /\n', 2, /^invalid chmod parameter: '64a'. it should be octal string and between 0 and 07777$/, 13],
    ['a --chmod above 07777', 'FROM scratch\nCOPY --chmod=10000 foo /\n', 2, /^invalid chmod parameter: '10000'. it should be octal string and between 0 and 07777$/, 14],
    ['no stages', 'ARG foo=bar\n', 1, /^dockerfile contains no stages to build$/, 1],
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
