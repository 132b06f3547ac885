/**
 * The cost model of cache-aware placement, in milliseconds of work. A
 * build (or a branch of one) placed on a worker must run, there, every
 * predicted step the worker does not hold, or pull it when another live
 * worker holds it and pulling is cheaper; that work is shared with the
 * builds already running on the worker (processor sharing: with `load`
 * builds running, a new one gets 1 / (1 + load) of it). So
 *
 *     expected(w) = (BUILD_BASE_MS + work(w)) × (1 + load(w))
 *
 * and the lowest expected time wins. A build its holder has whole costs
 * little there however busy the holder is, so a project sticks to the
 * worker holding its cache; one with much to run goes to an idle worker.
 * The trade-off is bounded: a worker running more than MAX_CACHE_LOAD_GAP
 * builds beyond the least busy fitting one is scored as if it held
 * nothing (so a hot worker never takes every build).
 */

/** What a build costs beyond its predicted steps (solving, exporting, steps placement cannot foresee), shared like the rest. */
export const BUILD_BASE_MS = 200;
/** A step whose run time is unknown (never ran here, or imported from a cache). */
export const UNKNOWN_STEP_MS = 1000;
/** A worker running more than this many builds beyond the least busy fitting one never wins by its cache. */
export const MAX_CACHE_LOAD_GAP = 2;

/** What the cache knows of one predicted step's key, for placement. */
export interface KeyCost {
  /** The live worker holding the result, if any. */
  holder?: string;
  /** How long the step took when it ran (ms); null when unknown or not held anywhere. */
  runMs: number | null;
  /** Expected ms to pull the result from its holder to another worker; undefined when it cannot be pulled. */
  pullMs?: number;
}

/**
 * Ms of work one step is on `workerId`: none where it is held; the cheaper
 * of pulling and running where another worker holds it (a result whose run
 * time is unknown is pulled, as VertexCache.resolve does); its run time
 * (UNKNOWN_STEP_MS when unknown) where nobody has it.
 */
export function stepWorkMs(cost: KeyCost | undefined, workerId: string): number {
  if (!cost) return UNKNOWN_STEP_MS;
  if (cost.holder === workerId) return 0;
  if (cost.holder !== undefined && cost.pullMs !== undefined) return cost.runMs === null ? cost.pullMs : Math.min(cost.runMs, cost.pullMs);
  return cost.runMs ?? UNKNOWN_STEP_MS;
}

/** A worker's work for a set of steps: the ms to run or pull, and how many of them it holds. */
export interface Work {
  ms: number;
  held: number;
}

/** The work of `keys` on `workerId` (see stepWorkMs). */
export function workOn(keys: readonly string[], costs: ReadonlyMap<string, KeyCost>, workerId: string): Work {
  let ms = 0;
  let held = 0;
  for (const k of keys) {
    const c = costs.get(k);
    if (c?.holder === workerId) held++;
    ms += stepWorkMs(c, workerId);
  }
  return { ms, held };
}

/** A candidate worker for placement: its id, its load (builds running) and its work for what is placed. */
export interface Candidate {
  id: string;
  load: number;
  work: Work;
}

/**
 * The expected ms of each candidate (see the module comment): base + work,
 * stretched by its load; a candidate more than MAX_CACHE_LOAD_GAP builds
 * busier than the least busy one is scored with the most work any
 * candidate has (its cache does not count).
 */
export function expectedMs(candidates: readonly Candidate[], baseMs: number): Map<string, number> {
  const least = Math.min(...candidates.map((c) => c.load));
  const cold = Math.max(...candidates.map((c) => c.work.ms));
  return new Map(candidates.map((c) => [c.id, (baseMs + (c.load - least > MAX_CACHE_LOAD_GAP ? cold : c.work.ms)) * (1 + c.load)]));
}
