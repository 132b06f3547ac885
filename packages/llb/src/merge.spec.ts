import { describe, expect, it } from 'vitest';
import { FileChain } from './file.js';
import { merge } from './merge.js';
import { parseDefinition } from './marshal.js';
import { local } from './source.js';
import { marshal, State } from './state.js';

describe('merge', () => {
  const a = FileChain.start().mkdir('/a', 0o755).apply(State.scratch());
  const b = FileChain.start().copy(local('context'), '/b', '/b').apply(State.scratch());

  it('makes a MergeOp over the inputs in order, each distinct output once', () => {
    const m = merge([a, b, a], { description: 'merged' });
    const def = parseDefinition(marshal(m));
    const op = def.ops.get(def.result!.digest)!;
    expect(op.op.op.case).toBe('merge');
    expect(op.op.op.value).toMatchObject({ inputs: [0n, 1n, 0n] });
    expect(op.op.inputs.map((i) => i.digest)).toEqual([a.output!.vertex.marshal().digest, b.output!.vertex.marshal().digest]);
    expect(op.metadata?.description).toBe('merged');
  });

  it('leaves scratch out: none left is scratch, one left is that state', () => {
    expect(merge([State.scratch(), State.scratch()]).isScratch()).toBe(true);
    expect(merge([State.scratch(), a])).toBe(a);
  });

  it('is deterministic', () => {
    expect(merge([a, b]).output!.vertex.marshal().digest).toBe(merge([a, b]).output!.vertex.marshal().digest);
    expect(merge([a, b]).output!.vertex.marshal().digest).not.toBe(merge([b, a]).output!.vertex.marshal().digest);
  });
});
