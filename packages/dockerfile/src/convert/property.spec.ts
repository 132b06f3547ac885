import { KilnError } from '@kiln/common';
import fc from 'fast-check';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseInstructions } from '../instructions/index.js';
import { parseDockerfile } from '../parser/index.js';
import { convertDockerfile } from './convert.js';

const dir = join(import.meta.dirname, '../testing/fixtures/corpus');
const corpus = readdirSync(dir)
  .filter((f) => f.endsWith('.Dockerfile'))
  .sort()
  .map((f) => readFileSync(join(dir, f), 'utf8'));

/** Characters that matter to the parser and lexer, plus some plain ones. */
const ALPHABET = [...'\\`"\'${}[]<<-=#:,/ \t\n\rABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789', 'FROM ', 'RUN ', 'COPY ', 'ARG ', 'ENV ', '<<EOF\n', 'EOF\n', '--mount=', '--from=', 'ONBUILD ', '\\\n', '# escape=`\n', '["a", "b"]', '${A:-x}'];
const fragment = fc.array(fc.constantFrom(...ALPHABET), { maxLength: 40 }).map((parts) => parts.join(''));

type Mutation = { at: number; len: number; insert: string; kind: 'replace' | 'dupLine' | 'truncate' };
const mutation: fc.Arbitrary<Mutation> = fc.record({
  at: fc.nat(),
  len: fc.nat({ max: 30 }),
  insert: fragment,
  kind: fc.constantFrom('replace', 'dupLine', 'truncate'),
});

function mutate(text: string, muts: Mutation[]): string {
  let out = text;
  for (const m of muts) {
    const at = out.length === 0 ? 0 : m.at % (out.length + 1);
    if (m.kind === 'replace') out = out.slice(0, at) + m.insert + out.slice(at + m.len);
    else if (m.kind === 'truncate') out = out.slice(0, at);
    else {
      const lines = out.split('\n');
      const i = at % Math.max(1, lines.length);
      lines.splice(i, 0, lines[i] ?? '');
      out = lines.join('\n');
    }
  }
  return out;
}

/** Parses and converts; returns normally or with a typed error (KilnError), never anything else. Fails when slow. */
async function survives(text: string): Promise<boolean> {
  const started = performance.now();
  try {
    parseInstructions(parseDockerfile(text));
    await convertDockerfile(text, { platform: { os: 'linux', architecture: 'amd64' } });
  } catch (err) {
    if (!(err instanceof KilnError)) throw new Error(`untyped ${(err as Error)?.constructor?.name}: ${(err as Error)?.message}\n--- input ---\n${text}`);
  }
  const ms = performance.now() - started;
  if (ms > 2000) throw new Error(`took ${ms.toFixed(0)} ms\n--- input ---\n${text}`);
  return true;
}

describe('parser and converter under random input', () => {
  it('random text parses or fails with a typed error', async () => {
    await fc.assert(fc.asyncProperty(fragment, survives), { numRuns: 400, seed: 20261123 });
  });

  it('mutated corpus Dockerfiles parse and convert or fail with a typed error', async () => {
    const input = fc.tuple(fc.constantFrom(...corpus), fc.array(mutation, { minLength: 1, maxLength: 4 })).map(([text, muts]) => mutate(text, muts));
    await fc.assert(fc.asyncProperty(input, survives), { numRuns: 600, seed: 4242 });
  });

  it('keeps working with unseeded runs too', async () => {
    const input = fc.tuple(fc.constantFrom(...corpus), fc.array(mutation, { minLength: 1, maxLength: 3 })).map(([text, muts]) => mutate(text, muts));
    await fc.assert(fc.asyncProperty(input, survives), { numRuns: 200 });
    expect(corpus.length).toBeGreaterThan(0);
  });
});
