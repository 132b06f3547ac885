import type { Client } from '@connectrpc/connect';
import type { content as contentApi } from '@kiln/api';
import { asKilnError, CanceledError, KilnError, type Logger } from '@kiln/common';
import { CACHE_OWNER, type CacheRecord, type CacheStore } from '../cache/cache-store.js';
import type { KeyCost } from './placement-cost.js';
import { PullCost } from './pull-cost.js';
import { pullResult } from './result-pull.js';
import type { WorkerHandle, WorkerPool } from './workers.js';

/** Longest placement waits for a holder to tell its results' sizes (else a pull is estimated at its fixed cost). */
const SIZE_LOOKUP_MS = 1000;

/** Longest a pull may take beyond its estimate before the step runs instead (a hung holder). */
const PULL_SLACK_MS = 10_000;

/** A result taken from the cache: refs held for the taker under an ephemeral retention `holdOwner`. */
export interface CacheHit {
  workerId: string;
  refs: string[];
  holdOwner: string;
}

/** What a step produced: its refs and, for a result imported from a cache, the lease holding its layer blobs. */
export interface ProducedResult {
  refs: string[];
  lease?: string;
}

/**
 * The solver cache over its records and the workers' ref retentions. A
 * stored result is retained on its worker under CACHE_OWNER (persisted, so
 * it survives restarts of both); a hit takes an extra ephemeral retention
 * for the build that uses it, dropped with `releaseHit`. Identical keys
 * computed at once by several builds run once: the others wait for the
 * first and then take its result from the cache.
 *
 * A result held by another live worker is pulled to the asking one through
 * the content tier (see pullResult) when that is expected to cost less than
 * running the step took (see PullCost); the record then moves to the
 * asking worker, as it does when a step is rebuilt there.
 */
/** What waiting for a key's run in flight ends with: the step's own failure, which the waiters share. */
interface Settled {
  failed?: unknown;
}

export class VertexCache {
  private readonly inflight = new Map<string, Promise<Settled>>();
  /** The worker each key in flight is being run on or pulled to (its record will name it): placement counts it as held there. */
  private readonly producing = new Map<string, string>();
  private holds = 0;
  private readonly pullCost = new PullCost();

  constructor(
    private readonly store: CacheStore,
    private readonly workers: WorkerPool,
    private readonly logger: Logger,
    /** The content tier, through which results move between workers; absent: they never do. */
    private readonly content?: () => Promise<Client<typeof contentApi.ContentService>>,
  ) {}

  /**
   * Runs `produce` for `key` unless the cache has it (when `lookup`). A
   * result produced here is stored (replacing an older one). Returns the
   * result and whether it came from the cache. While another build runs
   * the key, this one waits (`waiting` is called once when it starts to)
   * and takes its result; when that run fails as a step (code `vertex`: the
   * command failed), so does this one, with the same error; when it was
   * canceled or lost its worker, this one runs the step itself. `produce`
   * may hand over a content-store lease with the refs (a result imported
   * from a cache: the lease holds its blobs), which the record then owns.
   */
  async resolve(
    key: string,
    worker: WorkerHandle,
    opts: { lookup: boolean; description: string; holder: string; pull?: { buildId: string; signal: AbortSignal }; waiting?: () => Promise<void>; signal?: AbortSignal },
    produce: () => Promise<string[] | ProducedResult>,
  ): Promise<{ refs: string[]; workerId: string; cached: boolean; holdOwner?: string; pulledFrom?: string }> {
    if (opts.lookup) {
      let waited = false;
      for (;;) {
        const running = this.inflight.get(key);
        if (running) {
          if (!waited) await opts.waiting?.();
          waited = true;
          const { failed } = await untilAborted(running, opts.signal);
          if (failed) throw failed;
        }
        const hit = await this.lookup(key, worker, opts.holder);
        if (hit) return { ...hit, cached: true };
        if (!opts.pull) break;
        // Checked and set with no await between: one pull of a key at a time (a second asker waits and finds it local).
        if (this.inflight.has(key)) continue;
        const pulling = this.pullFrom(key, worker, opts.holder, opts.pull);
        const pulled = settledOf(pulling);
        this.inflight.set(key, pulled);
        this.producing.set(key, worker.id);
        try {
          const hit = await pulling;
          if (hit) return { ...hit, cached: true };
        } finally {
          if (this.inflight.get(key) === pulled) {
            this.inflight.delete(key);
            this.producing.delete(key);
          }
        }
        break;
      }
    }
    const startedMs = Date.now();
    const run = produce().then((r): ProducedResult => (Array.isArray(r) ? { refs: r } : r));
    const settled = run.then(
      async (r): Promise<Settled> => {
        await this.save(key, worker, r, opts.description, Date.now() - startedMs);
        return {};
      },
      (err: unknown): Settled => (asKilnError(err).code === 'vertex' ? { failed: err } : {}),
    );
    this.inflight.set(key, settled);
    this.producing.set(key, worker.id);
    try {
      const { refs } = await run;
      await settled;
      return { refs, workerId: worker.id, cached: false };
    } finally {
      if (this.inflight.get(key) === settled) {
        this.inflight.delete(key);
        this.producing.delete(key);
      }
    }
  }

  /**
   * The result of `key`, which a step on `worker` reads, moved there from the
   * worker holding it whatever the cost (the step was placed on `worker`,
   * see placeSteps) and held for `holder` (end it with releaseHit). The
   * record moves along, as for a pull. Throws `unavailable` naming the
   * holder when the result cannot be moved (its holder is gone or failed).
   */
  async bring(key: string, worker: WorkerHandle, holder: string, p: { buildId: string; signal: AbortSignal }): Promise<CacheHit> {
    const from = this.store.get(key)?.workerId;
    for (let attempt = 0; attempt < 3; attempt++) {
      const running = this.inflight.get(key);
      if (running) await running;
      const hit = await this.lookup(key, worker, holder);
      if (hit) return hit;
      if (this.inflight.has(key)) continue;
      const pulling = this.pullFrom(key, worker, holder, p, true);
      const pulled = settledOf(pulling);
      this.inflight.set(key, pulled);
      try {
        const hit = await pulling;
        if (hit) return hit;
      } finally {
        if (this.inflight.get(key) === pulled) this.inflight.delete(key);
      }
      break;
    }
    throw new KilnError('unavailable', `the result of a step on worker "${from ?? 'unknown'}" could not be moved to worker "${worker.id}", which reads it`, { worker: from ?? '' });
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
      if (rec.lease) await this.deleteLease(rec.lease, key);
      return undefined;
    }
    this.store.touch(key);
    return { workerId: worker.id, refs: rec.refs, holdOwner };
  }

  /**
   * The result of `key` another live worker holds, pulled to `worker` and
   * held for `holder`, when pulling is expected to be cheaper than running
   * the step; undefined otherwise, or when the pull fails (logged: the step
   * then runs).
   */
  private async pullFrom(key: string, worker: WorkerHandle, holder: string, p: { buildId: string; signal: AbortSignal }, force = false): Promise<(CacheHit & { pulledFrom: string }) | undefined> {
    const rec = this.store.get(key);
    if (!rec || rec.workerId === worker.id || !this.content) return undefined;
    const from = await this.workers.get(rec.workerId);
    if (!from) return undefined;
    const log = this.logger.child({ key, step: rec.description, from: from.id, to: worker.id });
    const deadline = new AbortController();
    const signal = AbortSignal.any([p.signal, deadline.signal]);
    let timer: NodeJS.Timeout | undefined;
    try {
      timer = setTimeout(() => deadline.abort(new Error('the pull took too long')), PULL_SLACK_MS);
      const usage = await from.client.refUsage({ refs: rec.refs }, { signal });
      if (usage.usage.some((u) => !u.found)) return undefined;
      const bytes = usage.usage.reduce((n, u) => n + Number(u.size), 0);
      const estimateMs = Math.round(this.pullCost.estimateMs(bytes));
      if (!force && !this.pullCost.shouldPull(bytes, rec.runMs)) {
        log.info({ bytes, estimateMs, runMs: rec.runMs }, 'running a step another worker holds: pulling it would cost more');
        return undefined;
      }
      clearTimeout(timer);
      timer = setTimeout(() => deadline.abort(new Error('the pull took too long')), 3 * estimateMs + PULL_SLACK_MS);
      const startedMs = Date.now();
      const pulled = await pullResult(from, worker, rec.refs, await this.content(), { buildId: p.buildId, signal });
      const tookMs = Date.now() - startedMs;
      this.pullCost.observe(bytes, tookMs);
      const holdOwner = `${holder}#${++this.holds}`;
      try {
        await worker.client.retain({ refs: pulled.refs, owner: CACHE_OWNER });
        await worker.client.retain({ refs: pulled.refs, owner: holdOwner, ephemeral: true });
      } finally {
        // The import's own reference: the retentions hold the refs now.
        await worker.client.release({ refs: pulled.refs });
      }
      const old = this.store.put(key, worker.id, pulled.refs, rec.description, { runMs: rec.runMs, lease: pulled.lease });
      if (old) await this.dropUnreferenced(old);
      log.info({ bytes, estimateMs, tookMs, runMs: rec.runMs }, force ? 'step result moved to the worker of the step reading it' : 'step result pulled from another worker instead of running it');
      return { workerId: worker.id, refs: pulled.refs, holdOwner, pulledFrom: from.id };
    } catch (err) {
      if (p.signal.aborted) throw err;
      log.warn({ err }, 'failed to pull a step result from another worker; running the step');
      return undefined;
    } finally {
      clearTimeout(timer);
    }
  }

  private async save(key: string, worker: WorkerHandle, { refs, lease }: ProducedResult, description: string, runMs: number): Promise<void> {
    let saved = false;
    try {
      const res = await worker.client.retain({ refs, owner: CACHE_OWNER });
      if (res.missing.length > 0) return;
      const old = this.store.put(key, worker.id, refs, description, { runMs, lease: lease ?? null });
      saved = true;
      if (old) await this.dropUnreferenced(old);
    } catch (err) {
      this.logger.warn({ err, key }, 'failed to store a cache record');
    } finally {
      // No record owns the lease: its blobs go with the build.
      if (!saved && lease) await this.deleteLease(lease, key);
    }
  }

  private async deleteLease(lease: string, key: string): Promise<void> {
    if (!this.content) return;
    await (await this.content()).deleteLease({ id: lease }).catch((err: unknown) => this.logger.warn({ err, key, lease }, 'failed to delete a cache record\'s lease'));
  }

  /** Ends a hit's hold on its refs. */
  async releaseHit(hit: CacheHit): Promise<void> {
    const w = await this.workers.get(hit.workerId);
    await w?.client.drop({ refs: hit.refs, owner: hit.holdOwner });
  }

  /**
   * What the cache knows of each of `keys` it has a record of, for
   * placement (see placement-cost.ts): the live worker holding it, the
   * step's run time, and what pulling it to another worker is expected to
   * cost (see PullCost), from the result's size on its holder (one
   * RefUsage per holder, bounded by SIZE_LOOKUP_MS; unknown sizes count
   * as 0 bytes). A record of a worker not in `live`, or whose holder no
   * longer has the refs, keeps only its run time; without a content tier
   * (or a second worker) nothing is pullable. A key being run or pulled
   * right now counts as held by the worker it is produced on.
   */
  async placementCosts(keys: readonly string[], live: readonly WorkerHandle[], signal?: AbortSignal): Promise<Map<string, KeyCost>> {
    const out = new Map<string, KeyCost>();
    if (keys.length === 0) return out;
    const liveIds = new Set(live.map((w) => w.id));
    const records = this.store.getMany(keys);
    const byHolder = new Map<string, CacheRecord[]>();
    for (const r of records) if (liveIds.has(r.workerId)) byHolder.set(r.workerId, [...(byHolder.get(r.workerId) ?? []), r]);
    const pullable = this.content !== undefined && live.length > 1;
    const sizes = new Map<string, number | undefined>();
    await Promise.all(
      [...byHolder].map(async ([id, recs]) => {
        if (!pullable) return;
        const holder = live.find((w) => w.id === id)!;
        const refs = [...new Set(recs.flatMap((r) => r.refs))];
        try {
          const res = await holder.client.refUsage({ refs }, { signal: signal ? AbortSignal.any([signal, AbortSignal.timeout(SIZE_LOOKUP_MS)]) : AbortSignal.timeout(SIZE_LOOKUP_MS) });
          for (const u of res.usage) sizes.set(`${id} ${u.ref}`, u.found ? Number(u.size) : -1);
        } catch (err) {
          if (signal?.aborted) throw err;
          this.logger.debug({ err, worker: id }, 'no result sizes for placement: pulls estimated at their fixed cost');
        }
      }),
    );
    for (const r of records) {
      if (this.producing.has(r.key)) continue;
      if (!liveIds.has(r.workerId)) {
        out.set(r.key, { runMs: r.runMs });
        continue;
      }
      const known = r.refs.map((ref) => sizes.get(`${r.workerId} ${ref}`));
      // The holder lost it: only its run time is known.
      if (known.some((b) => b === -1)) {
        out.set(r.key, { runMs: r.runMs });
        continue;
      }
      const bytes = known.reduce<number>((n, b) => n + (b ?? 0), 0);
      out.set(r.key, { holder: r.workerId, runMs: r.runMs, pullMs: pullable ? this.pullCost.estimateMs(bytes) : undefined });
    }
    // A step running (or being pulled) now is as good as held where it is produced: a build placed there waits for it
    // (elsewhere it would wait and pull the result, of unknown size); concurrent builds of one project then meet on one worker.
    const runMs = new Map(records.map((r) => [r.key, r.runMs]));
    for (const k of keys) {
      const on = this.producing.get(k);
      if (on !== undefined && liveIds.has(on)) out.set(k, { holder: on, runMs: runMs.get(k) ?? null, pullMs: pullable ? this.pullCost.estimateMs(0) : undefined });
    }
    return out;
  }

  /** Expected ms of pulling a small result (its fixed cost: what bringing a branch's result to its reader costs at least). */
  pullFixedMs(): number {
    return this.pullCost.estimateMs(0);
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
    // A pulled or imported result's blobs are needed no longer once its refs are gone.
    if (rec.lease && refs.length === rec.refs.length) await this.deleteLease(rec.lease, rec.key);
  }
}

/** `p`, or a CanceledError as soon as `signal` aborts (a build stops waiting for another's run). */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(new CanceledError());
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new CanceledError());
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** A pull in flight as waiters see it: it never fails them (they look the key up again). */
function settledOf(pulling: Promise<unknown>): Promise<Settled> {
  return pulling.then(
    () => ({}),
    () => ({}),
  );
}
