import type { llb } from '@kiln/api';
import { KilnError, UnavailableError } from '@kiln/common';
import { opKind, type ParsedDefinition } from '@kiln/llb';
import { formatPlatform } from '@kiln/registry';
import { BUILD_BASE_MS, expectedMs, type Work } from './placement-cost.js';
import { runsPlatform } from './platforms.js';
import { matchesAll, type WorkerFilter } from './worker-filter.js';
import type { WorkerHandle } from './workers.js';


export interface WorkerChoice {
  /** Filters the worker must match (the request's `worker_filter` and the ops' constraints). */
  filters?: readonly WorkerFilter[];
  /** Builds running on a worker now; the least busy fitting worker is picked. */
  load?: (workerId: string) => number;
  /**
   * The work the build's predicted steps are on a worker: the ms to run or
   * pull those it does not hold, and how many it holds (see
   * placement-cost.ts); absent: placement by load alone.
   */
  work?: (workerId: string) => Work;
  /** Workers not to pick (one a build just lost). */
  exclude?: ReadonlySet<string>;
}

/**
 * The worker for a build of one or more definitions (one per target
 * platform), among the workers matching the filters that run every op kind
 * the definitions hold (`exec`, `file`, `source:git`, ...: workers announce
 * theirs) and every exec op's platform, natively or emulated (workers list
 * both in their platforms). Only exec ops bind a platform: sources and file
 * ops run anywhere, so a cross-compiling Dockerfile (`FROM
 * --platform=$BUILDPLATFORM` + COPY into the target stage) needs no
 * emulator. All of a build's ops run on one worker, since refs do not move
 * between workers.
 *
 * Among the fitting workers, the build goes where it is expected to take
 * the least time: its work there (the predicted steps the worker would run
 * or pull, in ms) plus BUILD_BASE_MS, shared with the builds the worker
 * runs, `(BUILD_BASE_MS + work) × (1 + load)`, bounded by
 * MAX_CACHE_LOAD_GAP (see placement-cost.ts). Ties go to the worker
 * holding more of the steps, then the less busy one, then the lowest id
 * (so builds one after another stay on one worker). Without work (or no
 * cache anywhere) this is the least busy worker, lowest id first. So a
 * build its holder has whole (work 0) goes there while it runs 2 builds
 * more than an idle worker that would have 500 ms to run (200 × 3 <
 * 700), and a build with 10 s to run anywhere goes to the idle worker.
 *
 * Throws `failed_precondition` naming the filters and the workers' labels
 * when no worker matches the filters; naming the platform, or the op kind
 * and what the workers run, and carrying the first such op's digest (so the
 * Dockerfile line is shown) when none of them fits; `unavailable` when
 * there are no workers at all.
 */
export function pickWorker(all: readonly WorkerHandle[], defs: readonly ParsedDefinition[], choice: WorkerChoice = {}): WorkerHandle {
  return preferred(fittingWorkers(all, defs, choice), choice);
}

/** The workers a build fits on (filters, op kinds, platforms; see pickWorker), never empty: throws as pickWorker does. */
export function fittingWorkers(all: readonly WorkerHandle[], defs: readonly ParsedDefinition[], choice: Pick<WorkerChoice, 'filters' | 'exclude'> = {}): WorkerHandle[] {
  const workers = all.filter((w) => !choice.exclude?.has(w.id));
  if (workers.length === 0) throw new UnavailableError(all.length === 0 ? 'no workers are available' : 'no other worker is available');
  const filters = choice.filters ?? [];
  const matching = workers.filter((w) => matchesAll(filters, w));
  if (matching.length === 0) {
    const listed = workers.map((w) => `${w.id} {${formatLabels(w.labels)}}`).join('; ');
    throw new KilnError('failed_precondition', `no worker matches ${describeFilters(filters)} (workers: ${listed})`, { filter: filters.map((f) => f.text).join(' ') });
  }
  const wanted = neededPlatforms(defs);
  const kinds = neededOpKinds(defs);
  const runsPlatforms = (w: WorkerHandle) => wanted.every((n) => w.platforms.some((p) => runsPlatform(p, n.platform)));
  const runsKinds = (w: WorkerHandle) => kinds.every((k) => runsOpKind(w, k.kind));
  const fitting = matching.filter((w) => runsPlatforms(w) && runsKinds(w));
  if (fitting.length > 0) return fitting;
  const among = filters.length > 0 ? ` matching ${describeFilters(filters)}` : '';
  const byPlatform = matching.filter(runsPlatforms);
  if (byPlatform.length > 0) throw noOpKind(byPlatform, kinds, among);
  const unsupported = wanted.find((n) => !matching.some((w) => w.platforms.some((p) => runsPlatform(p, n.platform))));
  const missing = unsupported ?? wanted[0]!;
  const offered = [...new Set(matching.flatMap((w) => w.platforms.map(formatPlatform)))].join(', ') || 'none';
  const reason = unsupported
    ? `no worker${among} can run steps for platform ${formatPlatform(missing.platform)}`
    : `no one worker${among} can run steps for all of ${wanted.map((n) => formatPlatform(n.platform)).join(', ')}`;
  throw new KilnError(
    'failed_precondition',
    `${reason} (workers offer: ${offered}); RUN for another platform needs an emulator registered with binfmt_misc (qemu-user-static) or a worker of that platform`,
    { digest: missing.digest, platform: formatPlatform(missing.platform) },
  );
}

/** The fitting worker expected to finish the build first (see pickWorker). */
function preferred(fitting: readonly WorkerHandle[], choice: WorkerChoice): WorkerHandle {
  const load = choice.load ?? (() => 0);
  const work = choice.work ?? (() => ({ ms: 0, held: 0 }));
  const candidates = fitting.map((w) => ({ w, id: w.id, load: load(w.id), work: work(w.id) }));
  const expected = expectedMs(candidates, BUILD_BASE_MS);
  const better = (c: (typeof candidates)[number], best: (typeof candidates)[number]) => {
    const d = expected.get(c.id)! - expected.get(best.id)!;
    if (d !== 0) return d < 0;
    if (c.work.held !== best.work.held) return c.work.held > best.work.held;
    return c.load < best.load || (c.load === best.load && c.id < best.id);
  };
  return candidates.reduce((best, c) => (better(c, best) ? c : best)).w;
}

/** Whether the worker announced `kind` (a worker announcing no kinds predates the announcement: it runs all). */
export function runsOpKind(w: Pick<WorkerHandle, 'ops'>, kind: string): boolean {
  return !w.ops || w.ops.length === 0 || w.ops.includes(kind);
}

/** The failed_precondition for workers that fit the platforms but lack an op kind: names the kind, its first op and what each worker runs. */
function noOpKind(workers: readonly WorkerHandle[], kinds: readonly NeededKind[], among: string): KilnError {
  const lacking = kinds.find((k) => !workers.some((w) => runsOpKind(w, k.kind)));
  const offered = workers.map((w) => `${w.id}: ${w.ops?.length ? w.ops.join(', ') : 'all'}`).join('; ');
  if (lacking) {
    return new KilnError('failed_precondition', `no worker${among} runs ${lacking.kind} steps (workers run: ${offered})`, { digest: located(lacking.def, lacking.digest), opKind: lacking.kind });
  }
  const first = kinds.find((k) => !workers.every((w) => runsOpKind(w, k.kind)))!;
  return new KilnError('failed_precondition', `no one worker${among} runs all of ${kinds.map((k) => k.kind).join(', ')} (workers run: ${offered})`, { digest: located(first.def, first.digest), opKind: first.kind });
}

/** Every worker filter the definitions' ops carry (LLB worker constraints). */
export function constraintFilters(defs: readonly ParsedDefinition[]): string[] {
  const out = new Set<string>();
  for (const def of defs) for (const op of def.ops.values()) for (const f of op.op.constraints?.filter ?? []) out.add(f);
  return [...out];
}

/** The op kinds the definitions hold, each with the first op of that kind. */
function neededOpKinds(defs: readonly ParsedDefinition[]): NeededKind[] {
  const needed = new Map<string, NeededKind>();
  for (const def of defs) {
    for (const [digest, op] of def.ops) {
      const kind = opKind(op.op);
      if (kind !== undefined && !needed.has(kind)) needed.set(kind, { kind, digest, def });
    }
  }
  return [...needed.values()];
}

interface NeededKind {
  kind: string;
  digest: string;
  def: ParsedDefinition;
}

/**
 * `digest`, or the nearest op using it (breadth first) whose metadata has a
 * source range, so the error shows a Dockerfile line: an `ADD URL` source
 * has none, the copy reading it has. Only on the error path (a walk of users).
 */
function located(def: ParsedDefinition, digest: string): string {
  const seen = new Set<string>();
  const queue = [digest];
  while (queue.length > 0) {
    const d = queue.shift()!;
    if (seen.has(d)) continue;
    seen.add(d);
    if ((def.ops.get(d as never)?.metadata?.ranges.length ?? 0) > 0) return d;
    for (const [user, op] of def.ops) if (op.op.inputs.some((i) => i.digest === d)) queue.push(user);
  }
  return digest;
}

/** The platforms the exec ops need, each with the first op asking for it. */
function neededPlatforms(defs: readonly ParsedDefinition[]): { platform: llb.Platform; digest: string }[] {
  const needed = new Map<string, { platform: llb.Platform; digest: string }>();
  for (const def of defs) {
    for (const [digest, op] of def.ops) {
      const p = op.op.platform;
      if (op.op.op.case !== 'exec' || !p?.os || !p.architecture) continue;
      const key = formatPlatform(p);
      if (!needed.has(key)) needed.set(key, { platform: p, digest });
    }
  }
  return [...needed.values()];
}

function describeFilters(filters: readonly WorkerFilter[]): string {
  return filters.map((f) => `--worker-filter ${f.text}`).join(' ');
}

function formatLabels(labels: Readonly<Record<string, string>>): string {
  return Object.entries(labels)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}=${v}`)
    .join(', ');
}
