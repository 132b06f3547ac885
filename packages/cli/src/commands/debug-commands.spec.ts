import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { main } from '../main.js';

const conformance = resolve(dirname(fileURLToPath(import.meta.url)), '../../../../../shared/conformance');

async function kiln(argv: string[]) {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d: Buffer) => (out += d.toString('utf8')));
  stderr.on('data', (d: Buffer) => (err += d.toString('utf8')));
  const code = await main(argv, { daemonCommand: ['false'], stdout, stderr, signal: new AbortController().signal });
  return { code, out, err };
}

/** Whether ../shared is beside the repo: skipped with one line in a user's clone, required in CI (`KILN_REQUIRE_SHARED=1`). */
const shared = existsSync(conformance);
if (!shared && process.env.KILN_REQUIRE_SHARED === '1') throw new Error(`${conformance} is missing and KILN_REQUIRE_SHARED=1`);
if (!shared) console.log(`skipped: kiln debug dockerfile-ast conformance dumps: no shared conformance data at ${conformance}`);

describe('kiln debug dockerfile-ast', () => {
  it.skipIf(!shared)('finds the shared conformance data', () => {
    expect(existsSync(join(conformance, 'dockerfile-parser'))).toBe(true);
  });

  const cases = existsSync(join(conformance, 'dockerfile-parser')) ? readdirSync(join(conformance, 'dockerfile-parser')).sort() : [];
  it.each(cases)('prints the conformance dump of %s', async (name) => {
    const res = await kiln(['debug', 'dockerfile-ast', join(conformance, 'dockerfile-parser', name, 'Dockerfile')]);
    expect(res.err).toBe('');
    expect(res.code).toBe(0);
    expect(res.out.trim()).toBe(readFileSync(join(conformance, 'dockerfile-parser', name, 'result'), 'utf8').trim());
  });

  const negatives = existsSync(join(conformance, 'dockerfile-parser-negative')) ? readdirSync(join(conformance, 'dockerfile-parser-negative')).sort() : [];
  it.each(negatives)('rejects %s with exit 1 naming the line', async (name) => {
    const res = await kiln(['debug', 'dockerfile-ast', join(conformance, 'dockerfile-parser-negative', name, 'Dockerfile')]);
    expect(res.code).toBe(1);
    expect(res.err).toMatch(/^ERROR: .*\(Dockerfile:\d+\)\n$/);
  });

  it('names a missing file; exits 2 without one', async () => {
    expect(await kiln(['debug', 'dockerfile-ast', '/nonexistent/Dockerfile'])).toMatchObject({ code: 1, err: expect.stringMatching(/failed to read \/nonexistent\/Dockerfile/) });
    expect((await kiln(['debug', 'dockerfile-ast'])).code).toBe(2);
  });
});

describe('kiln debug shell-word', () => {
  it('expands a word with the given environment', async () => {
    expect((await kiln(['debug', 'shell-word', '--env', 'A=x y', '--', '${A:-d}-$B'])).out).toBe('x y-\n');
    expect((await kiln(['debug', 'shell-word', '--env=V=abc.tar.gz', '${V%%.*}'])).out).toBe('abc\n');
  });

  it('splits unquoted expansions into words with --words', async () => {
    expect((await kiln(['debug', 'shell-word', '--words', '--env', 'A=a b', '$A "c d"'])).out).toBe('a\nb\nc d\n');
  });

  it('exits 1 with the message on a lexer error, 2 on bad usage', async () => {
    expect(await kiln(['debug', 'shell-word', '${A:?is required}'])).toMatchObject({ code: 1, err: expect.stringMatching(/^ERROR: .*is required/) });
    expect((await kiln(['debug', 'shell-word', '--env', 'novalue', 'x'])).code).toBe(2);
    expect((await kiln(['debug', 'shell-word'])).code).toBe(2);
  });
});
