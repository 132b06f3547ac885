import type { Digest } from '@kiln/common';
import type { ParsedDefinition } from '@kiln/llb';
import { expectedMs, UNKNOWN_STEP_MS, workOn, type KeyCost } from './placement-cost.js';

export interface StepPlacementInput {
  def: ParsedDefinition;
  /** The build's worker: the final result (and so the export) is made there. */
  buildWorker: string;
  /** Ids of the workers that fit the build (the build's worker among them). */
  workers: readonly string[];
  /** Per op digest, the cache key known before anything runs (see predictedCacheKeys). */
  predicted: ReadonlyMap<string, string>;
  /** What the cache knows of each predicted key (holder, run time, pull estimate; see VertexCache.placementCosts). */
  costs: ReadonlyMap<string, KeyCost>;
  /** Expected ms to bring a branch's result to the worker of the step reading it. */
  moveMs: number;
  /** Builds running on a worker besides this one. */
  load: (workerId: string) => number;
}

/**
 * The worker each non-source step of a build runs on. The chain of the
 * final result (each step's first input: the root filesystem it builds on)
 * runs on the build's worker; every other input of a step (`COPY --from`,
 * a mount, a merge) starts a branch, which runs on the fitting worker
 * expected to finish it first, as builds are placed (placement-cost.ts:
 * the ms of its steps the worker would run or pull, stretched by its
 * load, plus `moveMs` off its consumer's worker; a branch placed here
 * counts as load), ties to its consumer's worker: so a branch stays with
 * its cache unless that worker is far busier, and a branch with no cache
 * anywhere goes to a less busy worker only when its consumer's is busier. A branch without an exec step stays with its
 * consumer (moving it costs more than it can save). A step two branches
 * read runs once, where it was placed first (the chain before branches).
 * Sources have no entry: they run on every worker a step reading them is on.
 */
export function placeSteps(p: StepPlacementInput): Map<string, string> {
  const placed = new Map<string, string>();
  const { def } = p;
  if (!def.result) return placed;
  const extra = new Map<string, number>();
  const load = (id: string) => p.load(id) + (extra.get(id) ?? 0);
  const stack: { digest: string; consumer: string; branch: boolean }[] = [{ digest: def.result.digest, consumer: p.buildWorker, branch: false }];
  while (stack.length > 0) {
    const { digest, consumer, branch } = stack.pop()!;
    if (placed.has(digest)) continue;
    const op = def.ops.get(digest as Digest);
    if (!op || op.op.op.case === 'source' || op.op.op.case === undefined) continue;
    let worker = consumer;
    if (branch) {
      worker = chooseBranchWorker(p, unplacedSubtree(def, digest, placed), consumer, load);
      if (worker !== consumer) extra.set(worker, (extra.get(worker) ?? 0) + 1);
    }
    placed.set(digest, worker);
    const inputs = [...new Set(op.op.inputs.map((i) => i.digest as string))];
    // The first input is popped first: the whole chain under it is placed before the branches.
    for (let i = inputs.length - 1; i >= 0; i--) stack.push({ digest: inputs[i]!, consumer: worker, branch: i > 0 });
  }
  return placed;
}

/** The non-source steps under `root` (itself included) not placed yet. */
function unplacedSubtree(def: ParsedDefinition, root: string, placed: ReadonlyMap<string, string>): string[] {
  const seen = new Set<string>();
  const out: string[] = [];
  const todo = [root];
  while (todo.length > 0) {
    const d = todo.pop()!;
    if (seen.has(d) || placed.has(d)) continue;
    seen.add(d);
    const op = def.ops.get(d as Digest);
    if (!op || op.op.op.case === 'source') continue;
    out.push(d);
    for (const i of op.op.inputs) todo.push(i.digest);
  }
  return out;
}

function chooseBranchWorker(p: StepPlacementInput, steps: readonly string[], consumer: string, load: (id: string) => number): string {
  if (!steps.some((d) => p.def.ops.get(d as Digest)?.op.op.case === 'exec')) return consumer;
  const keys = steps.map((d) => p.predicted.get(d)).filter((k): k is string => k !== undefined);
  // Steps whose keys are not known ahead cost the same anywhere.
  const unknownMs = (steps.length - keys.length) * UNKNOWN_STEP_MS;
  const candidates = p.workers.map((id) => {
    const w = workOn(keys, p.costs, id);
    return { id, load: load(id), work: { ms: w.ms + unknownMs, held: w.held } };
  });
  const expected = expectedMs(candidates, 0);
  const total = (id: string) => expected.get(id)! + (id === consumer ? 0 : p.moveMs);
  let best: (typeof candidates)[number] | undefined;
  for (const c of candidates) {
    const better =
      !best ||
      total(c.id) < total(best.id) ||
      (total(c.id) === total(best.id) && best.id !== consumer && (c.id === consumer || c.load < best.load || (c.load === best.load && c.id < best.id)));
    if (better) best = c;
  }
  return best?.id ?? consumer;
}
