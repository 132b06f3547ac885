/** One unreferenced blob the sweep may remove. */
export interface SweepCandidate {
  readonly digest: string;
  readonly size: number;
  /** Unix ms. */
  readonly lastUsedAt: number;
}

export interface SweepPolicy {
  /** Unix ms. */
  now: number;
  /** Bytes of every blob in the store, referenced or not. */
  totalBytes: number;
  keepBytes?: number;
  keepDurationMs?: number;
}

/**
 * Marks from `roots` along `refs` (parent digest -> digests it references):
 * the set of digests that must stay.
 */
export function mark(roots: Iterable<string>, refs: ReadonlyMap<string, readonly string[]>): Set<string> {
  const marked = new Set<string>();
  const queue: string[] = [];
  const add = (d: string) => {
    if (marked.has(d)) return;
    marked.add(d);
    queue.push(d);
  };
  for (const r of roots) add(r);
  for (let d = queue.pop(); d !== undefined; d = queue.pop()) {
    for (const child of refs.get(d) ?? []) add(child);
  }
  return marked;
}

/**
 * Picks which unreferenced blobs to remove, in removal order.
 *
 * With no `keepBytes` and no `keepDurationMs`: all of them. Otherwise the
 * blobs are ordered by "effective last use" — the latest use of the blob or
 * of any unreferenced blob referencing it, directly or not — so a blob never
 * comes after one that references it (a kept manifest keeps its layers); ties
 * form groups taken whole. Groups unused for longer than `keepDurationMs` go,
 * then more groups, least recently used first, while the store holds more
 * than `keepBytes`.
 */
export function planSweep(
  candidates: readonly SweepCandidate[],
  refs: ReadonlyMap<string, readonly string[]>,
  policy: SweepPolicy,
): SweepCandidate[] {
  const eff = new Map<string, number>(candidates.map((c) => [c.digest, c.lastUsedAt]));
  // Propagate each parent's last use to its children until nothing changes;
  // values only grow and are always one of the inputs, so this ends within
  // (longest simple path) passes, cycles included.
  for (let pass = 0; pass <= candidates.length; pass++) {
    let changed = false;
    for (const c of candidates) {
      const mine = eff.get(c.digest) ?? 0;
      for (const child of refs.get(c.digest) ?? []) {
        const theirs = eff.get(child);
        if (theirs !== undefined && theirs < mine) {
          eff.set(child, mine);
          changed = true;
        }
      }
    }
    if (!changed) break;
  }
  const ordered = [...candidates].sort(
    (a, b) => (eff.get(a.digest) ?? 0) - (eff.get(b.digest) ?? 0) || (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0),
  );
  if (policy.keepBytes === undefined && policy.keepDurationMs === undefined) return ordered;

  const cutoff = policy.keepDurationMs === undefined ? -Infinity : policy.now - policy.keepDurationMs;
  const out: SweepCandidate[] = [];
  let remaining = policy.totalBytes;
  for (let i = 0; i < ordered.length; ) {
    const groupEff = eff.get(ordered[i]?.digest ?? '') ?? 0;
    let j = i;
    while (j < ordered.length && (eff.get(ordered[j]?.digest ?? '') ?? 0) === groupEff) j++;
    const old = groupEff < cutoff;
    const over = policy.keepBytes !== undefined && remaining > policy.keepBytes;
    if (!old && !over) break; // later groups are newer still
    for (let k = i; k < j; k++) {
      const c = ordered[k];
      if (!c) continue;
      out.push(c);
      remaining -= c.size;
    }
    i = j;
  }
  return out;
}
