import type { llb } from '@kiln/api';
import { KilnError, UnavailableError } from '@kiln/common';
import type { ParsedDefinition } from '@kiln/llb';
import { formatPlatform } from '@kiln/registry';
import { runsPlatform } from './platforms.js';
import { matchesAll, type WorkerFilter } from './worker-filter.js';
import type { WorkerHandle } from './workers.js';


export interface WorkerChoice {
  /** Filters the worker must match (the request's `worker_filter` and the ops' constraints). */
  filters?: readonly WorkerFilter[];
  /** Builds running on a worker now; the least busy fitting worker is picked. */
  load?: (workerId: string) => number;
  /** Workers not to pick (one a build just lost). */
  exclude?: ReadonlySet<string>;
}

/**
 * The worker for a build of one or more definitions (one per target
 * platform): among the workers matching the filters that can run every exec
 * op's platform, natively or emulated (workers list both in their
 * platforms), the one running the fewest builds; ties go to the lowest id,
 * so builds one after another stay on one worker and find its cache. Only
 * exec ops bind a platform: sources and file ops run anywhere, so a
 * cross-compiling Dockerfile (`FROM --platform=$BUILDPLATFORM` + COPY into
 * the target stage) needs no emulator. All of a build's ops run on one
 * worker, since refs do not move between workers.
 *
 * Throws `failed_precondition` naming the filters and the workers' labels
 * when no worker matches the filters, or naming the platform and carrying
 * the first exec op's digest (so the Dockerfile line is shown) when none of
 * them fits; `unavailable` when there are no workers at all.
 */
export function pickWorker(all: readonly WorkerHandle[], defs: readonly ParsedDefinition[], choice: WorkerChoice = {}): WorkerHandle {
  const workers = all.filter((w) => !choice.exclude?.has(w.id));
  if (workers.length === 0) throw new UnavailableError(all.length === 0 ? 'no workers are available' : 'no other worker is available');
  const filters = choice.filters ?? [];
  const matching = workers.filter((w) => matchesAll(filters, w));
  if (matching.length === 0) {
    const listed = workers.map((w) => `${w.id} {${formatLabels(w.labels)}}`).join('; ');
    throw new KilnError('failed_precondition', `no worker matches ${describeFilters(filters)} (workers: ${listed})`, { filter: filters.map((f) => f.text).join(' ') });
  }
  const wanted = neededPlatforms(defs);
  const fitting = matching.filter((w) => wanted.every((n) => w.platforms.some((p) => runsPlatform(p, n.platform))));
  if (fitting.length > 0) {
    const load = choice.load ?? (() => 0);
    return fitting.reduce((best, w) => {
      const d = load(w.id) - load(best.id);
      return d < 0 || (d === 0 && w.id < best.id) ? w : best;
    });
  }
  const unsupported = wanted.find((n) => !matching.some((w) => w.platforms.some((p) => runsPlatform(p, n.platform))));
  const missing = unsupported ?? wanted[0]!;
  const offered = [...new Set(matching.flatMap((w) => w.platforms.map(formatPlatform)))].join(', ') || 'none';
  const among = filters.length > 0 ? ` matching ${describeFilters(filters)}` : '';
  const reason = unsupported
    ? `no worker${among} can run steps for platform ${formatPlatform(missing.platform)}`
    : `no one worker${among} can run steps for all of ${wanted.map((n) => formatPlatform(n.platform)).join(', ')}`;
  throw new KilnError(
    'failed_precondition',
    `${reason} (workers offer: ${offered}); RUN for another platform needs an emulator registered with binfmt_misc (qemu-user-static) or a worker of that platform`,
    { digest: missing.digest, platform: formatPlatform(missing.platform) },
  );
}

/** Every worker filter the definitions' ops carry (LLB worker constraints). */
export function constraintFilters(defs: readonly ParsedDefinition[]): string[] {
  const out = new Set<string>();
  for (const def of defs) for (const op of def.ops.values()) for (const f of op.op.constraints?.filter ?? []) out.add(f);
  return [...out];
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
