import { create } from '@bufbuild/protobuf';
import { llb } from '@kiln/api';
import { State, Vertex, metadataOf, type Output, type StateOptions } from './state.js';

/**
 * Layers `states` in order into one tree (a MergeOp, as BuildKit's
 * `llb.Merge`): a later state's files replace an earlier one's, directories
 * merge. Scratch states add nothing and are left out; with none left the
 * result is scratch, with one it is that state itself (no op). The platform
 * is the first non-scratch state's.
 */
export function merge(states: readonly State[], opts?: StateOptions): State {
  const outputs = states.filter((s) => s.output !== undefined);
  if (outputs.length === 0) return State.scratch();
  if (outputs.length === 1) return outputs[0]!;
  const inputs: Output[] = [];
  const indexes = outputs.map((s) => {
    const o = s.output!;
    const found = inputs.findIndex((i) => i.vertex === o.vertex && i.index === o.index);
    if (found >= 0) return BigInt(found);
    inputs.push(o);
    return BigInt(inputs.length - 1);
  });
  const platform = outputs[0]!.platform;
  const op = create(llb.OpSchema, { op: { case: 'merge', value: { inputs: indexes } }, platform });
  return State.fromOutput({ vertex: new Vertex(op, inputs, metadataOf(opts)), index: 0 }, platform);
}
