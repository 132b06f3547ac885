import type { control } from '@kiln/api';
import { escapeControl } from '@kiln/common';

/**
 * The lines `kiln build --explain-cache` and `kiln history explain` print:
 * one per step that ran instead of coming from the cache, with what
 * changed; a note when every step came from the cache.
 */
export function formatCacheMisses(misses: readonly Pick<control.CacheMiss, 'name' | 'reason'>[]): string {
  if (misses.length === 0) return 'cache misses: none (every step came from the cache)\n';
  return misses.map((m) => escapeControl(`cache miss: ${m.name}: ${m.reason}`)).join('\n') + '\n';
}
