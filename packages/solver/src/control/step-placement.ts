import type { Digest } from '@kiln/common';
import type { ParsedDefinition } from '@kiln/llb';
import { CACHED_STEPS_PER_BUILD, MAX_CACHE_LOAD_GAP } from './pick-worker.js';

export interface StepPlacementInput {
  def: ParsedDefinition;
  /** The build's worker: the final result (and so the export) is made there. */
  buildWorker: string;
  /** Ids of the workers that fit the build (the build's worker among them). */
  workers: readonly string[];
  /** Per op digest, the cache key known before anything runs (see predictedCacheKeys). */
  predicted: ReadonlyMap<string, string>;
  /** The live worker holding a key's result, if any. */
  holder: (key: string) => string | undefined;
  /** Builds running on a worker besides this one. */
  load: (workerId: string) => number;
}

/**
 * The worker each non-source step of a build runs on. The chain of the
 * final result (each step's first input: the root filesystem it builds on)
 * runs on the build's worker; every other input of a step (`COPY --from`,
 * a mount, a merge) starts a branch, which runs on the fitting worker that
 * holds the most of its steps' predicted keys, traded against load as
 * builds are (score = held − CACHED_STEPS_PER_BUILD × (load − least load);
 * a branch placed here counts as load), ties to its consumer's worker; a
 * branch with no cache anywhere goes to a less busy worker only when its
 * consumer's is busier. A branch without an exec step stays with its
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
  const held = new Map<string, number>();
  for (const d of steps) {
    const key = p.predicted.get(d);
    const h = key === undefined ? undefined : p.holder(key);
    if (h !== undefined) held.set(h, (held.get(h) ?? 0) + 1);
  }
  const least = Math.min(...p.workers.map(load));
  let best: { id: string; score: number; load: number } | undefined;
  for (const id of p.workers) {
    const gap = load(id) - least;
    const score = (gap > MAX_CACHE_LOAD_GAP ? 0 : (held.get(id) ?? 0)) - CACHED_STEPS_PER_BUILD * gap;
    const c = { id, score, load: load(id) };
    const better =
      !best ||
      c.score > best.score ||
      (c.score === best.score && best.id !== consumer && (c.id === consumer || c.load < best.load || (c.load === best.load && c.id < best.id)));
    if (better) best = c;
  }
  return best?.id ?? consumer;
}
