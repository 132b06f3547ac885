import type { ContextManifest } from './local-diff-apply.js';

/** The last copy of one client directory the worker received. */
export interface CachedContext {
  /** A worker ref to its snapshot; the holder of a `take` result owns one reference. */
  ref: string;
  snapshotId: string;
  manifest: ContextManifest;
  /** Snapshots in its parent chain made by earlier transfers (0: a fresh tree). */
  depth: number;
}

/** How the cache holds refs: the worker's reference counting. */
export interface ContextRefHooks {
  /** One more reference to `ref`; false when the ref is gone. */
  acquire(ref: string): boolean;
  release(refs: readonly string[]): Promise<void>;
}

/**
 * The last transferred copy of each client directory, by shared key
 * (SharedDir.shared_key + directory name), so the next transfer asks only
 * for changes. Holds one reference on each copy's ref; the least recently
 * used copies beyond `maxEntries` are let go. Lives in memory: after a
 * worker restart the first transfer is a full one.
 */
export class LocalContexts {
  private readonly entries = new Map<string, CachedContext>();

  constructor(
    private readonly hooks: ContextRefHooks,
    private readonly maxEntries = 32,
  ) {}

  /** The copy for `key` with one reference taken for the caller (release it with the worker), or undefined. */
  take(key: string): CachedContext | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (!this.hooks.acquire(e.ref)) {
      this.entries.delete(key);
      return undefined;
    }
    this.entries.delete(key);
    this.entries.set(key, e);
    return e;
  }

  /** Makes `copy` the newest for `key` (taking its own reference) and lets the one it replaces go. */
  async put(key: string, copy: CachedContext): Promise<void> {
    if (!this.hooks.acquire(copy.ref)) return;
    const old = this.entries.get(key);
    this.entries.delete(key);
    this.entries.set(key, copy);
    const drop: string[] = old && old.ref !== copy.ref ? [old.ref] : old ? [copy.ref] : [];
    while (this.entries.size > this.maxEntries) {
      const [k, e] = this.entries.entries().next().value as [string, CachedContext];
      this.entries.delete(k);
      drop.push(e.ref);
    }
    await this.hooks.release(drop);
  }

  /** The manifest of a copy still held, by its snapshot (what a checksum of it can take file digests from). */
  manifestOf(snapshotId: string): ContextManifest | undefined {
    for (const e of this.entries.values()) if (e.snapshotId === snapshotId) return e.manifest;
    return undefined;
  }

  /** Forgets every copy (their references are dropped by the worker's own clear). */
  clear(): void {
    this.entries.clear();
  }
}
