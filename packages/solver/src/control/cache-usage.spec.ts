import { create } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { control } from '@kiln/api';
import { describe, expect, it } from 'vitest';
import { planCachePrune, pruneKeepBytes, type CacheUsageEntry } from './cache-usage.js';
import { compileUsageFilter } from './usage-filter.js';

const NOW = 10_000_000;
function entry(key: string, lastUsedAgoMs: number, size: number, more: { inUse?: boolean; description?: string } = {}): CacheUsageEntry {
  const lastUsedAtMs = NOW - lastUsedAgoMs;
  return {
    entry: { key, workerId: 'w', refs: [key], description: more.description ?? key, createdAtMs: lastUsedAtMs, lastUsedAtMs, usageCount: 1, runMs: null, lease: null },
    record: create(control.UsageRecordSchema, {
      id: key,
      size: BigInt(size),
      inUse: more.inUse ?? false,
      lastUsedAt: timestampFromMs(lastUsedAtMs),
      description: more.description ?? key,
      recordType: 'regular',
    }),
  };
}

describe('cache prune plan', () => {
  const all = [entry('old', 3_600_000, 100), entry('mid', 600_000, 50), entry('new', 1000, 10), entry('busy', 7_200_000, 500, { inUse: true })];
  const keys = (es: CacheUsageEntry[]) => es.map((e) => e.entry.key);

  it('removes unused records oldest first, never in-use ones', () => {
    expect(keys(planCachePrune(all, { matches: () => true, nowMs: NOW }))).toEqual(['old', 'mid', 'new']);
  });
  it('keeps records used within keep-duration', () => {
    expect(keys(planCachePrune(all, { matches: () => true, nowMs: NOW, keepDurationMs: 900_000 }))).toEqual(['old']);
  });
  it('with keep-storage removes only until the total fits', () => {
    // total 660: dropping old (100) leaves 560, mid (50) leaves 510 <= 520.
    expect(keys(planCachePrune(all, { matches: () => true, nowMs: NOW, keepBytes: 520n }))).toEqual(['old', 'mid']);
    expect(keys(planCachePrune(all, { matches: () => true, nowMs: NOW, keepBytes: 10_000n }))).toEqual([]);
  });
  it('applies compiled filters', () => {
    const byDescription = compileUsageFilter(['description~=mi'], '--filter');
    expect(keys(planCachePrune(all, { matches: (r) => byDescription.matches(r, NOW), nowMs: NOW }))).toEqual(['mid']);
    const until = compileUsageFilter(['until=30m'], '--filter');
    expect(keys(planCachePrune(all, { matches: (r) => until.matches(r, NOW), nowMs: NOW }))).toEqual(['old']);
    expect(compileUsageFilter(['type=content'], '--filter').matches(all[0]!.record, NOW)).toBe(false);
  });
});

describe('usage filters', () => {
  it('knows types, ids, descriptions, ages and in-use, and names a bad filter', () => {
    const f = compileUsageFilter(['type=regular', 'id=ol', 'inuse=false'], '--filter');
    expect([...f.types]).toEqual(['regular']);
    expect(f.selective).toBe(true);
    expect(compileUsageFilter([], '--filter').types).toEqual(new Set(['regular', 'content']));
    expect(compileUsageFilter(['until=1h30m'], '--filter').untilMs).toBe(5_400_000);
    expect(() => compileUsageFilter(['color=red'], '--filter')).toThrow(/unsupported filter "color=red"/);
    expect(() => compileUsageFilter(['type=frontend'], '--filter')).toThrow(/unsupported record type "frontend"/);
    expect(() => compileUsageFilter(['until=soon'], '--filter')).toThrow(/invalid duration "soon"/);
  });
});

describe('prune size caps (buildx --reserved-space, --max-used-space, --min-free-space)', () => {
  const caps = (o: Partial<Parameters<typeof pruneKeepBytes>[0]>) => pruneKeepBytes({ reservedBytes: 0n, maxUsedBytes: 0n, minFreeBytes: 0n, totalBytes: 1000n, freeBytes: 500n, ...o });
  it('reserved alone caps the cache (the older --keep-storage); nothing set: no cap', () => {
    expect(caps({ reservedBytes: 300n })).toBe(300n);
    expect(caps({})).toBeUndefined();
  });
  it('max-used caps, min-free lowers the cap by what is missing, reserved is the floor', () => {
    expect(caps({ maxUsedBytes: 600n })).toBe(600n);
    expect(caps({ minFreeBytes: 700n })).toBe(800n); // 200 more must be freed
    expect(caps({ maxUsedBytes: 900n, minFreeBytes: 900n })).toBe(600n);
    expect(caps({ maxUsedBytes: 100n, reservedBytes: 400n })).toBe(400n);
    expect(caps({ minFreeBytes: 400n })).toBe(1000n); // enough free: nothing goes
    expect(caps({ minFreeBytes: 5000n })).toBeUndefined(); // cannot free enough: everything unused goes
  });
});
