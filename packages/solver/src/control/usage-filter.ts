import { InvalidArgumentError, parseDuration } from '@kiln/common';
import { timestampMs } from '@bufbuild/protobuf/wkt';
import type { control } from '@kiln/api';

/** Record types `kiln du`/`prune` know: solver cache results and content store blobs. */
export const RECORD_TYPES = ['regular', 'content'] as const;

/** A compiled `--filter` list: every clause must match. */
export interface UsageFilter {
  matches(record: control.UsageRecord, nowMs: number): boolean;
  /** Record types the filter can match (all when it names none). */
  types: ReadonlySet<string>;
  /** The `until` age in ms, when given. */
  untilMs?: number;
  /** Whether the filter narrows records beyond type and age (then content GC, which cannot select blobs, is skipped). */
  selective: boolean;
}

/**
 * Compiles BuildKit-style filters: `type=regular|content`, `id=PREFIX`,
 * `description~=TEXT` (substring), `until=DURATION` (last used longer ago
 * than that), `inuse=true|false`. Anything else is an InvalidArgumentError
 * naming the filter and `field`.
 */
export function compileUsageFilter(filters: readonly string[], field: string): UsageFilter {
  const checks: ((r: control.UsageRecord, now: number) => boolean)[] = [];
  const types = new Set<string>();
  let untilMs: number | undefined;
  let selective = false;
  for (const f of filters) {
    const m = /^([a-z]+)(~=|=)(.*)$/.exec(f);
    const [key, op, value] = m ? [m[1]!, m[2]!, m[3]!] : ['', '', ''];
    if (key === 'type' && op === '=') {
      if (!(RECORD_TYPES as readonly string[]).includes(value)) throw new InvalidArgumentError(`unsupported record type "${value}" in filter "${f}" (have ${RECORD_TYPES.join(', ')})`, field);
      types.add(value);
    } else if (key === 'until' && op === '=') {
      const ms = parseDuration(value, `${field} ${f}`);
      untilMs = ms;
      checks.push((r, now) => !r.inUse && (r.lastUsedAt ? timestampMs(r.lastUsedAt) : 0) <= now - ms);
    } else if (key === 'id' && op === '=') {
      selective = true;
      checks.push((r) => r.id.startsWith(value));
    } else if (key === 'description' && (op === '~=' || op === '=')) {
      selective = true;
      checks.push((r) => (op === '=' ? r.description === value : r.description.includes(value)));
    } else if (key === 'inuse' && op === '=' && (value === 'true' || value === 'false')) {
      selective = true;
      checks.push((r) => r.inUse === (value === 'true'));
    } else {
      throw new InvalidArgumentError(`unsupported filter "${f}" (supported: type=, id=, description~=, until=, inuse=)`, field);
    }
  }
  const allowed = types.size > 0 ? types : new Set<string>(RECORD_TYPES);
  return {
    types: allowed,
    untilMs,
    selective,
    matches: (r, now) => allowed.has(r.recordType) && checks.every((c) => c(r, now)),
  };
}
