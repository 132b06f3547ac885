import type { Logger } from '@kiln/common';
import { CACHE_OWNER, type CacheRecord, type CacheStore } from '../cache/cache-store.js';
import type { WorkerHandle, WorkerPool } from './workers.js';

/** A result taken from the cache: refs held for the taker under an ephemeral retention `holdOwner`. */
export interface CacheHit {
  workerId: string;
  refs: string[];
  holdOwner: string;
}

/**
 * The solver cache over its records and the workers' ref retentions. A
 * stored result is retained on its worker under CACHE_OWNER (persisted, so
 * it survives restarts of both); a hit takes an extra ephemeral retention
 * for the build that uses it, dropped with `releaseHit`. Identical keys
 * computed at once by several builds run once: the others wait for the
 * first and then take its result from the cache.
 */
export class VertexCache {
  private readonly inflight = new Map<string, Promise<unknown>>();
  private holds = 0;

  constructor(
    private readonly store: CacheStore,
    private readonly workers: WorkerPool,
    private readonly logger: Logger,
  ) {}

  /**
   * Runs `produce` for `key` unless the cache has it (when `lookup`). A
   * result produced here is stored (replacing an older one). Returns the
   * result and whether it came from the cache.
   */
  async resolve(
    key: string,
    worker: WorkerHandle,
    opts: { lookup: boolean; description: string; holder: string },
    produce: () => Promise<string[]>,
  ): Promise<{ refs: string[]; workerId: string; cached: boolean; holdOwner?: string }> {
    if (opts.lookup) {
      const running = this.inflight.get(key);
      if (running) await running.catch(() => undefined);
      const hit = await this.lookup(key, worker, opts.holder);
      if (hit) return { ...hit, cached: true };
    }
    const run = produce();
    const settled = run.then(
      async (refs) => this.save(key, worker, refs, opts.description),
      () => undefined,
    );
    this.inflight.set(key, settled);
    try {
      const refs = await run;
      await settled;
      return { refs, workerId: worker.id, cached: false };
    } finally {
      if (this.inflight.get(key) === settled) this.inflight.delete(key);
    }
  }

  /** The cached result of `key` on `worker`, retained for `holder`; undefined on a miss. */
  private async lookup(key: string, worker: WorkerHandle, holder: string): Promise<CacheHit | undefined> {
    const rec = this.store.get(key);
    if (!rec || rec.workerId !== worker.id) return undefined;
    const holdOwner = `${holder}#${++this.holds}`;
    const res = await worker.client.retain({ refs: rec.refs, owner: holdOwner, ephemeral: true });
    if (res.missing.length > 0) {
      // The worker lost them (e.g. its state was wiped): forget the record.
      this.logger.warn({ key, missing: res.missing }, 'cache record refers to refs the worker no longer has; dropping it');
      await worker.client.drop({ refs: rec.refs, owner: holdOwner });
      this.store.delete(key);
      return undefined;
    }
    this.store.touch(key);
    return { workerId: worker.id, refs: rec.refs, holdOwner };
  }

  private async save(key: string, worker: WorkerHandle, refs: string[], description: string): Promise<void> {
    try {
      const res = await worker.client.retain({ refs, owner: CACHE_OWNER });
      if (res.missing.length > 0) return;
      const old = this.store.put(key, worker.id, refs, description);
      if (old) await this.dropUnreferenced(old);
    } catch (err) {
      this.logger.warn({ err, key }, 'failed to store a cache record');
    }
  }

  /** Ends a hit's hold on its refs. */
  async releaseHit(hit: CacheHit): Promise<void> {
    const w = await this.workers.get(hit.workerId);
    await w?.client.drop({ refs: hit.refs, owner: hit.holdOwner });
  }

  /** How many of `keys` each worker holds a result of (see CacheStore.countByWorker). */
  heldByWorker(keys: readonly string[]): Map<string, number> {
    return keys.length === 0 ? new Map() : this.store.countByWorker(keys);
  }

  list(): CacheRecord[] {
    return this.store.list();
  }

  /** Removes a record and the cache's retention of its refs. */
  async remove(rec: CacheRecord): Promise<void> {
    this.store.delete(rec.key);
    await this.dropUnreferenced(rec);
  }

  /** Ends the cache's retention of `rec`'s refs that no other record names (the worker may hand one ref to several keys). */
  private async dropUnreferenced(rec: CacheRecord): Promise<void> {
    const named = new Set(this.store.list().filter((r) => r.workerId === rec.workerId).flatMap((r) => r.refs));
    const refs = rec.refs.filter((r) => !named.has(r));
    if (refs.length === 0) return;
    const w = await this.workers.get(rec.workerId);
    await w?.client.drop({ refs, owner: CACHE_OWNER }).catch((err: unknown) => this.logger.warn({ err, key: rec.key }, 'failed to drop cache refs'));
  }
}
