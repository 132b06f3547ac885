import { CanceledError } from '@kiln/common';

/**
 * A node of the build graph as the scheduler sees it: a dedup key, the nodes
 * it needs, and how to run it. The scheduler knows nothing of LLB.
 */
export interface GraphNode<R> {
  /** Equal keys mean equal work: concurrent builds share one run. */
  readonly key: string;
  readonly deps: readonly GraphNode<R>[];
  run(inputs: R[], signal: AbortSignal): Promise<R>;
}

export interface SchedulerOptions<R> {
  /** Most nodes running at once across all builds (default: 64). */
  maxParallelism?: number;
  /** Called when the last holder lets go of a result. */
  release?: (result: R) => Promise<void> | void;
}

interface Entry<R> {
  promise: Promise<R>;
  controller: AbortController;
  /** Builds waiting for or holding this result. */
  holders: number;
  waiting: number;
  settled: boolean;
  result?: R;
}

/**
 * Runs graph nodes in dependency order, in parallel up to a limit, running a
 * node once while any number of builds ask for it. A build's `signal`
 * cancels only the nodes no other build still waits for.
 */
export class Scheduler<R> {
  private readonly entries = new Map<string, Entry<R>>();
  private readonly max: number;
  private running = 0;
  private readonly queue: (() => void)[] = [];

  constructor(private readonly opts: SchedulerOptions<R> = {}) {
    this.max = Math.max(1, opts.maxParallelism ?? 64);
  }

  /** Starts a build session: results it obtains are held until `close()`. */
  session(signal: AbortSignal): SchedulerSession<R> {
    return new SchedulerSession(this, signal);
  }

  /** @internal */
  acquire(node: GraphNode<R>, session: SchedulerSession<R>): Promise<R> {
    let entry = this.entries.get(node.key);
    if (!entry) {
      const controller = new AbortController();
      const e: Entry<R> = { controller, holders: 0, waiting: 0, settled: false, promise: undefined as never };
      e.promise = this.execute(node, session, controller.signal).then(
        (r) => {
          e.settled = true;
          e.result = r;
          return r;
        },
        (err) => {
          e.settled = true;
          // A failed node is not kept: the next build tries again.
          if (this.entries.get(node.key) === e) this.entries.delete(node.key);
          throw err;
        },
      );
      entry = e;
      this.entries.set(node.key, e);
    }
    const e = entry;
    e.holders++;
    e.waiting++;
    session.waitFor(e);
    return e.promise.finally(() => session.doneWaiting(e));
  }

  /** @internal A build that waited for `e` was canceled. */
  stopWaiting(e: Entry<R>): void {
    if (--e.waiting === 0 && !e.settled) e.controller.abort(new CanceledError('every build that needed this step was canceled'));
  }

  /** @internal */
  async releaseKey(key: string): Promise<void> {
    const e = this.entries.get(key);
    if (!e) return;
    if (--e.holders > 0) return;
    this.entries.delete(key);
    if (e.settled && e.result !== undefined) await this.opts.release?.(e.result);
  }

  private async execute(node: GraphNode<R>, session: SchedulerSession<R>, signal: AbortSignal): Promise<R> {
    // Resolve the deps on a later tick: resolving them here would recurse
    // down a chain of thousands of nodes on one call stack.
    await Promise.resolve();
    const inputs = await Promise.all(node.deps.map((d) => session.resolve(d)));
    await this.slot(signal);
    try {
      if (signal.aborted) throw new CanceledError();
      return await node.run(inputs, signal);
    } finally {
      this.running--;
      this.queue.shift()?.();
    }
  }

  private slot(signal: AbortSignal): Promise<void> {
    if (this.running < this.max) {
      this.running++;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const go = () => {
        signal.removeEventListener('abort', onAbort);
        this.running++;
        resolve();
      };
      const onAbort = () => {
        const i = this.queue.indexOf(go);
        if (i >= 0) this.queue.splice(i, 1);
        reject(new CanceledError());
      };
      this.queue.push(go);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }
}

/** One build's view of the scheduler: resolves nodes, remembers what to release. */
export class SchedulerSession<R> {
  private readonly held = new Map<string, Promise<R>>();
  // One abort listener per build, not one per node: EventTarget checks for
  // duplicate listeners linearly, so thousands of them cost quadratic time.
  private readonly waiting = new Set<Entry<R>>();

  private readonly onAbort = () => {
    for (const e of this.waiting) this.scheduler.stopWaiting(e);
    this.waiting.clear();
  };

  constructor(private readonly scheduler: Scheduler<R>, readonly signal: AbortSignal) {
    signal.addEventListener('abort', this.onAbort, { once: true });
  }

  /** @internal */
  waitFor(e: Entry<R>): void {
    if (this.signal.aborted) return this.scheduler.stopWaiting(e);
    this.waiting.add(e);
  }

  /** @internal */
  doneWaiting(e: Entry<R>): void {
    if (this.waiting.delete(e)) e.waiting--;
  }

  resolve(node: GraphNode<R>): Promise<R> {
    let p = this.held.get(node.key);
    if (!p) {
      p = this.scheduler.acquire(node, this);
      this.held.set(node.key, p);
    }
    return p;
  }

  /** Lets go of every result this build obtained. */
  async close(): Promise<void> {
    // A signal that outlives the session (shared by several) keeps no listener of it.
    this.signal.removeEventListener('abort', this.onAbort);
    const keys = [...this.held.keys()];
    this.held.clear();
    for (const key of keys) await this.scheduler.releaseKey(key);
  }
}
