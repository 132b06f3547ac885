import type { llb } from '@kiln/api';

/**
 * The kinds of op a worker can run, as workers announce them in the
 * directory and the solver matches them against a definition: one per op
 * case, and one per source scheme (sources differ most in what a worker
 * needs: a session, a registry, git, the network).
 */
export const OP_KINDS = [
  'exec',
  'file',
  'merge',
  'diff',
  'source:local',
  'source:docker-image',
  'source:oci-layout',
  'source:http',
  'source:https',
  'source:git',
] as const;

export type OpKind = (typeof OP_KINDS)[number];

/** Whether `s` names a known op kind. */
export function isOpKind(s: string): s is OpKind {
  return (OP_KINDS as readonly string[]).includes(s);
}

/**
 * The kind of `op`: its case, or `source:<scheme>` for a source
 * (`docker-image://alpine` is `source:docker-image`). A source without a
 * scheme is `source:` + its identifier's head; undefined for an op with no
 * case (the terminal op, which no worker runs).
 */
export function opKind(op: llb.Op): string | undefined {
  const o = op.op;
  if (o.case === undefined) return undefined;
  if (o.case !== 'source') return o.case;
  const id = o.value.identifier;
  const at = id.indexOf('://');
  return `source:${at >= 0 ? id.slice(0, at) : id}`;
}
