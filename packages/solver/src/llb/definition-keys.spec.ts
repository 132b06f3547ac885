import { FileChain, local, marshal, parseDefinition, State } from '@kiln/llb';
import { describe, expect, it } from 'vitest';
import { definitionKeys } from './definition-keys.js';

describe('definitionKeys', () => {
  const ctx = local('context', { includePatterns: ['a'] });
  const copyA = FileChain.start().copy(ctx, '/a', '/a').apply(State.scratch(), { description: 'COPY a /a' });
  const copyB = FileChain.start().copy(copyA, '/a', '/b').apply(State.scratch(), { description: 'COPY --from=a /a /b' });
  const def = parseDefinition(marshal(copyB));
  const localDigest = [...def.ops.entries()].find(([, o]) => o.op.op.case === 'source')![0];

  it('keys every vertex from the local sources\' content keys alone, never from the results of its inputs', () => {
    const one = definitionKeys(def, (d) => (d === localDigest ? 'content-1' : undefined));
    expect(one.size).toBe(def.ops.size);
    expect(one.get(def.result!.digest)).toMatch(/^sha256:/);
    // Same definition and context content: same keys; other content: every key above the context changes.
    expect(definitionKeys(def, () => 'content-1')).toEqual(one);
    const two = definitionKeys(def, () => 'content-2');
    expect(two.get(def.result!.digest)).not.toBe(one.get(def.result!.digest));
  });

  it('leaves out vertices under a local source whose content key is unknown', () => {
    expect(definitionKeys(def, () => undefined).size).toBe(0);
  });
});
