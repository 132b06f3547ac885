import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { llb } from '@kiln/api';
import { InvalidArgumentError, sha256, walkPostOrder, type Digest } from '@kiln/common';

export type Op = llb.Op;
export type Definition = llb.Definition;
export type OpMetadata = llb.OpMetadata;

/**
 * Canonical bytes of an op: protobuf binary with map entries sorted by key, so
 * equal ops always give equal bytes and so equal digests.
 */
export function marshalOp(op: Op): Uint8Array {
  const src = op.op.case === 'source' ? op.op.value : undefined;
  if (src) {
    const sorted = Object.fromEntries(Object.entries(src.attrs).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    const copy = create(llb.OpSchema, { ...op, op: { case: 'source', value: { ...src, attrs: sorted } } });
    return toBinary(llb.OpSchema, copy);
  }
  return toBinary(llb.OpSchema, op);
}

export function digestOf(bytes: Uint8Array): Digest {
  return sha256(bytes);
}

export interface ParsedOp {
  digest: Digest;
  bytes: Uint8Array;
  op: Op;
  metadata?: OpMetadata;
}

/** A validated DAG: every op by digest, in definition order, plus the result. */
export interface ParsedDefinition {
  ops: Map<Digest, ParsedOp>;
  /** The op output the build produces, or undefined for an empty (scratch) result. */
  result?: { digest: Digest; index: number };
  definition: Definition;
}

/**
 * Decodes and validates a Definition: each op decodes, every input names an
 * op of the definition with a valid output index, there are no cycles, and
 * the last op is the terminal op with at most one input.
 */
export function parseDefinition(def: Definition): ParsedDefinition {
  const ops = new Map<Digest, ParsedOp>();
  if (def.def.length === 0) throw new InvalidArgumentError('definition has no ops', 'definition');
  const terminalBytes = def.def[def.def.length - 1]!;
  for (const bytes of def.def) {
    let op: Op;
    try {
      op = fromBinary(llb.OpSchema, bytes);
    } catch (err) {
      throw new InvalidArgumentError(`definition holds an op that does not decode: ${(err as Error).message}`, 'definition');
    }
    const digest = digestOf(bytes);
    ops.set(digest, { digest, bytes, op, metadata: def.metadata[digest] });
  }
  const terminalDigest = digestOf(terminalBytes);
  const terminal = ops.get(terminalDigest)!;
  if (terminal.op.op.case !== undefined || terminal.op.inputs.length > 1) {
    throw new InvalidArgumentError('definition must end with a terminal op of at most one input', 'definition');
  }
  ops.delete(terminalDigest);
  for (const p of ops.values()) {
    for (const input of p.op.inputs) {
      if (!ops.has(input.digest as Digest)) {
        throw new InvalidArgumentError(`op ${p.digest} names input ${input.digest} that the definition lacks`, 'definition');
      }
    }
  }
  checkAcyclic(ops);
  const first = terminal.op.inputs[0];
  if (first && !ops.has(first.digest as Digest)) {
    throw new InvalidArgumentError(`terminal op names input ${first.digest} that the definition lacks`, 'definition');
  }
  return { ops, result: first ? { digest: first.digest as Digest, index: Number(first.index) } : undefined, definition: def };
}

function checkAcyclic(ops: Map<Digest, ParsedOp>): void {
  walkPostOrder<Digest>(
    ops.keys(),
    (d) => d,
    (d) => ops.get(d)!.op.inputs.map((i) => i.digest as Digest),
    () => {},
    (d) => {
      throw new InvalidArgumentError(`definition has a cycle through ${d}`, 'definition');
    },
  );
}
