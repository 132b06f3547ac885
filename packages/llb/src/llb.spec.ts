import { create } from '@bufbuild/protobuf';
import { llb as pb } from '@kiln/api';
import { describe, expect, it } from 'vitest';
import { FileChain, State, fileActionInput, local, marshal, marshalOp, parseDefinition, source } from './index.js';

describe('llb', () => {
  it('gives the same digest whatever the attr insertion order', () => {
    const a = source('local://context', { b: '2', a: '1' });
    const b = source('local://context', { a: '1', b: '2' });
    expect(a.output!.vertex.marshal().digest).toBe(b.output!.vertex.marshal().digest);
  });

  it('marshals a copy chain into a valid definition, inputs before users', () => {
    const ctx = local('context', { includePatterns: ['a.txt'] });
    const out = FileChain.start().mkdir('/d', 0o755, { makeParents: true }).copy(ctx, '/a.txt', '/d/a.txt').apply(State.scratch(), { description: 'COPY a.txt /d/' });
    const def = marshal(out);
    expect(def.def).toHaveLength(3);
    const parsed = parseDefinition(def);
    expect(parsed.ops.size).toBe(2);
    const fileOp = parsed.ops.get(parsed.result!.digest)!;
    expect(fileOp.metadata?.description).toBe('COPY a.txt /d/');
    const actions = fileOp.op.op.case === 'file' ? fileOp.op.op.value.actions : [];
    expect(actions.map((a) => fileActionInput(a.input))).toEqual([{ kind: 'scratch' }, { kind: 'action', index: 0 }]);
    expect(actions[1]!.secondaryInput).toBe(0n);
    expect(marshal(out).def).toEqual(def.def);
  });

  it('rejects a definition that names a missing input', () => {
    const orphan = marshalOp(create(pb.OpSchema, { inputs: [{ digest: 'sha256:' + '0'.repeat(64), index: 0n }], op: { case: 'file', value: { actions: [] } } }));
    const terminal = marshalOp(create(pb.OpSchema, {}));
    expect(() => parseDefinition(create(pb.DefinitionSchema, { def: [orphan, terminal] }))).toThrow(/lacks/);
    expect(() => parseDefinition(create(pb.DefinitionSchema, { def: [] }))).toThrow(/no ops/);
  });

  it('marshals scratch to a terminal with no input', () => {
    const parsed = parseDefinition(marshal(State.scratch()));
    expect(parsed.result).toBeUndefined();
  });
});

describe('llb on long chains', () => {
  it('marshals and parses a chain of 10,000 file ops without overflowing the call stack', () => {
    let st = State.scratch();
    for (let i = 0; i < 10_000; i++) st = FileChain.start().mkdir(`/d${i}`, 0o755).apply(st);
    const parsed = parseDefinition(marshal(st));
    expect(parsed.ops.size).toBe(10_000);
  });

});
