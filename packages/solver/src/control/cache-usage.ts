import { create } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { control } from '@kiln/api';
import { CACHE_OWNER, type CacheRecord } from '../cache/cache-store.js';
import type { VertexCache } from './vertex-cache.js';
import type { WorkerPool } from './workers.js';

/** A cache entry and its Control usage record. */
export interface CacheUsageEntry {
  entry: CacheRecord;
  record: control.UsageRecord;
}

/**
 * Disk usage of the solver cache, one record (type "regular") per cache
 * entry: its key as id, the step name as description, the size of its refs'
 * snapshots on the worker (RefUsage), last use and usage count. A record is
 * in use while anything besides the cache retains one of its refs (a
 * running build's hold); shared when another entry names the same ref.
 */
export class CacheUsage {
  constructor(
    private readonly cache: VertexCache,
    private readonly workers: WorkerPool,
  ) {}

  async entries(signal?: AbortSignal): Promise<CacheUsageEntry[]> {
    const entries = this.cache.list();
    const usage = new Map<string, { size: bigint; owners: string[] }>();
    const named = new Map<string, number>();
    for (const workerId of new Set(entries.map((e) => e.workerId))) {
      const refs = [...new Set(entries.filter((e) => e.workerId === workerId).flatMap((e) => e.refs))];
      for (const r of entries.filter((e) => e.workerId === workerId).flatMap((e) => e.refs)) named.set(`${workerId}/${r}`, (named.get(`${workerId}/${r}`) ?? 0) + 1);
      const worker = await this.workers.get(workerId);
      if (!worker || refs.length === 0) continue;
      const res = await worker.client.refUsage({ refs }, { signal });
      for (const u of res.usage) usage.set(`${workerId}/${u.ref}`, { size: u.found ? u.size : 0n, owners: u.owners });
    }
    return entries.map((entry) => {
      const refs = entry.refs.map((r) => `${entry.workerId}/${r}`);
      return {
        entry,
        record: create(control.UsageRecordSchema, {
          id: entry.key,
          size: refs.reduce((n, r) => n + (usage.get(r)?.size ?? 0n), 0n),
          inUse: refs.some((r) => (usage.get(r)?.owners ?? []).some((o) => o !== CACHE_OWNER)),
          shared: refs.some((r) => (named.get(r) ?? 0) > 1),
          createdAt: timestampFromMs(entry.createdAtMs),
          lastUsedAt: timestampFromMs(entry.lastUsedAtMs),
          usageCount: BigInt(entry.usageCount),
          description: entry.description,
          recordType: 'regular',
        }),
      };
    });
  }

  /** Forgets an entry and ends the cache's retention of its refs (the worker then removes their snapshots). */
  async remove(e: CacheUsageEntry): Promise<void> {
    await this.cache.remove(e.entry);
  }
}

/**
 * Which cache entries a prune removes: unused ones matching `matches`, not
 * used within `keepDurationMs`, oldest first; with `keepBytes` only as many
 * as bring the cache's total size down to it.
 */
export function planCachePrune(
  all: readonly CacheUsageEntry[],
  opts: { matches: (r: control.UsageRecord) => boolean; nowMs: number; keepDurationMs?: number; keepBytes?: bigint },
): CacheUsageEntry[] {
  const candidates = all
    .filter((e) => !e.record.inUse && opts.matches(e.record))
    .filter((e) => opts.keepDurationMs === undefined || e.entry.lastUsedAtMs <= opts.nowMs - opts.keepDurationMs)
    .sort((a, b) => a.entry.lastUsedAtMs - b.entry.lastUsedAtMs);
  if (!opts.keepBytes || opts.keepBytes <= 0n) return candidates;
  let total = all.reduce((n, e) => n + e.record.size, 0n);
  const out: CacheUsageEntry[] = [];
  for (const e of candidates) {
    if (total <= opts.keepBytes) break;
    out.push(e);
    total -= e.record.size;
  }
  return out;
}

/**
 * The size a prune brings the cache down to (undefined: no cap, every
 * candidate goes), as BuildKit's calculateKeepBytes: `maxUsedBytes`, lowered
 * so that `minFreeBytes` of the disk end up free, never below
 * `reservedBytes`. With neither of the two, `reservedBytes` alone is the cap
 * (buildx's older --keep-storage).
 */
export function pruneKeepBytes(opts: { reservedBytes: bigint; maxUsedBytes: bigint; minFreeBytes: bigint; totalBytes: bigint; freeBytes: bigint }): bigint | undefined {
  if (opts.maxUsedBytes <= 0n && opts.minFreeBytes <= 0n) return opts.reservedBytes > 0n ? opts.reservedBytes : undefined;
  let keep = opts.maxUsedBytes > 0n ? opts.maxUsedBytes : undefined;
  const excess = opts.minFreeBytes - opts.freeBytes;
  if (opts.minFreeBytes > 0n && excess > 0n) {
    const target = opts.totalBytes - excess;
    keep = keep === undefined || target < keep ? target : keep;
  }
  // Only --min-free-space, and the disk has that free: nothing to prune.
  if (keep === undefined) return opts.totalBytes;
  if (keep < opts.reservedBytes) keep = opts.reservedBytes;
  return keep > 0n ? keep : undefined;
}
