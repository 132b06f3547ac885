import type { llb } from '@kiln/api';
import { sha256, walkPostOrder, type Digest } from '@kiln/common';
import type { ParsedDefinition, ParsedOp } from '@kiln/llb';
import type { GraphNode } from '../graph/scheduler.js';
import { isLocalSource } from './cache-keys.js';

/** What running one LLB op yields: refs on the worker that holds them, one per output. */
export interface OpResult {
  workerId: string;
  refs: string[];
  /** The vertex cache key (see opCacheKey); an input's key is this plus the output index. */
  cacheKey: string;
  /** Set when the refs came from the cache: the ephemeral retention to drop instead of releasing them. */
  holdOwner?: string;
}

export interface LlbVertex {
  readonly digest: Digest;
  readonly op: ParsedOp;
  readonly name: string;
  readonly inputs: readonly { vertex: LlbVertex; index: number }[];
}

/** Runs one vertex; `inputs` holds the result of each op input's vertex, in input order (output index in `v.inputs`). */
export type RunOp = (v: LlbVertex, inputs: OpResult[], signal: AbortSignal) => Promise<OpResult>;

/** A vertex resolved without its inputs (an imported cache record): its dedup key and how to get it. */
export interface Shortcut {
  key: string;
  run(v: LlbVertex, signal: AbortSignal): Promise<OpResult>;
}

/**
 * Adapts a parsed LLB definition to scheduler nodes. A node's key is the op
 * digest plus its inputs' keys; `scope` is mixed into the keys of sources
 * whose content is only known at run time (local context), so two clients'
 * contexts never share a result. `build` is mixed into every other key: a
 * build runs each of its own steps (its progress, history and cache records
 * see every one), and concurrent builds share a step one level down, where
 * the vertex cache runs each cache key once and hands the others its result.
 * `workerId` is mixed into every key: refs live on one worker, so builds on
 * different workers never share a run. A vertex in `shortcuts` is a node
 * without deps that runs the shortcut.
 */
export function toGraph(
  def: ParsedDefinition,
  scope: { session: string; build: string },
  runOp: RunOp,
  workerId = '',
  shortcuts: ReadonlyMap<string, Shortcut> = new Map(),
): Map<Digest, GraphNode<OpResult> & { vertex: LlbVertex }> {
  const nodes = new Map<Digest, GraphNode<OpResult> & { vertex: LlbVertex }>();
  // Inputs before users, iteratively (a chain may be thousands of ops long).
  const build = (digest: Digest): void => {
    const op = def.ops.get(digest)!;
    const shortcut = shortcuts.get(digest);
    if (shortcut) {
      // Its inputs are never resolved through it (their nodes exist only for other readers).
      const vertex: LlbVertex = { digest, op, name: op.metadata?.description || describeOp(op.op), inputs: [] };
      nodes.set(digest, { key: sha256(`shortcut:${shortcut.key}:${scope.build}@${workerId}`), deps: [], vertex, run: (_: OpResult[], signal: AbortSignal) => shortcut.run(vertex, signal) });
      return;
    }
    const inputs = op.op.inputs.map((i) => ({ node: nodes.get(i.digest as Digest)!, index: Number(i.index) }));
    // Deduplicate deps (an op may read two outputs of one op).
    const deps = [...new Set(inputs.map((i) => i.node))];
    const vertex: LlbVertex = {
      digest,
      op,
      name: op.metadata?.description || describeOp(op.op),
      inputs: inputs.map((i) => ({ vertex: i.node.vertex, index: i.index })),
    };
    // A local source stays per session (the builds of one bake session share its transfer).
    const scoped = isLocalSource(op.op) ? `:${scope.session}` : `:${scope.build}`;
    const key = sha256(`${digest}${scoped}@${workerId}|${deps.map((d) => d.key).join('|')}`);
    const node = {
      key,
      deps,
      vertex,
      run: (results: OpResult[], signal: AbortSignal) => {
        const byNode = new Map(deps.map((d, i) => [d, results[i]!]));
        return runOp(vertex, inputs.map((i) => byNode.get(i.node)!), signal);
      },
    };
    nodes.set(digest, node);
  };
  walkPostOrder<Digest>(
    def.ops.keys(),
    (d) => d,
    (d) => def.ops.get(d)!.op.inputs.map((i) => i.digest as Digest),
    build,
  );
  return nodes;
}

/** A readable default name for an op with no description. */
export function describeOp(op: llb.Op): string {
  switch (op.op.case) {
    case 'source':
      return op.op.value.identifier;
    case 'exec':
      return op.op.value.meta?.args.join(' ') ?? 'exec';
    case 'file':
      return `file: ${op.op.value.actions.map((a) => a.action.case).join(', ')}`;
    default:
      return op.op.case ?? 'noop';
  }
}

/**
 * Like toGraph, for a build whose steps run on several workers: `place`
 * gives a step's worker (see placeSteps); a step it has none for (a source)
 * runs on the worker of each step reading it, as a node per worker. Keys
 * mix in each node's worker as toGraph's do, so a node equals the one a
 * single-worker build on that worker makes. `runOp(workerId)` runs a step
 * there; its inputs may live on other workers.
 */
export function toPlacedGraph(
  def: ParsedDefinition,
  scope: { session: string; build: string },
  runOp: (workerId: string) => RunOp,
  rootWorker: string,
  place: ReadonlyMap<string, string>,
): { result: (GraphNode<OpResult> & { vertex: LlbVertex }) | undefined; nodes: Map<string, GraphNode<OpResult> & { vertex: LlbVertex; workerId: string }> } {
  type Placed = { digest: Digest; workerId: string };
  const nodes = new Map<string, GraphNode<OpResult> & { vertex: LlbVertex; workerId: string }>();
  const id = (p: Placed) => `${p.digest}@${p.workerId}`;
  const inputsOf = (p: Placed): Placed[] => def.ops.get(p.digest)!.op.inputs.map((i) => ({ digest: i.digest as Digest, workerId: place.get(i.digest) ?? p.workerId }));
  const root: Placed | undefined = def.result ? { digest: def.result.digest as Digest, workerId: place.get(def.result.digest) ?? rootWorker } : undefined;
  if (!root) return { result: undefined, nodes };
  walkPostOrder<Placed>([root], id, inputsOf, (p) => {
    const op = def.ops.get(p.digest)!;
    const inputs = inputsOf(p).map((i, n) => ({ node: nodes.get(id(i))!, index: Number(op.op.inputs[n]!.index) }));
    const deps = [...new Set(inputs.map((i) => i.node))];
    const vertex: LlbVertex = { digest: p.digest, op, name: op.metadata?.description || describeOp(op.op), inputs: inputs.map((i) => ({ vertex: i.node.vertex, index: i.index })) };
    const scoped = isLocalSource(op.op) ? `:${scope.session}` : `:${scope.build}`;
    const run = runOp(p.workerId);
    nodes.set(id(p), {
      key: sha256(`${p.digest}${scoped}@${p.workerId}|${deps.map((d) => d.key).join('|')}`),
      deps,
      vertex,
      workerId: p.workerId,
      run: (results: OpResult[], signal: AbortSignal) => {
        const byNode = new Map(deps.map((d, i) => [d, results[i]!]));
        return run(vertex, inputs.map((i) => byNode.get(i.node)!), signal);
      },
    });
  });
  return { result: nodes.get(id(root)), nodes };
}
