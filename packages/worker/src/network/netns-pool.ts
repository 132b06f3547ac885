import type { Logger } from '@kiln/common';

/**
 * Wired step namespaces kept ready, so a RUN step does not wait for a
 * namespace, two CNI ADDs and their iptables work (tens of ms each under
 * load), nor for the DEL afterwards.
 *
 * - The pool fills lazily: the first step asks, then up to `size`
 *   namespaces are made in the background, one at a time (a daemon that
 *   never runs a step makes none).
 * - A step's namespace comes back with `put(ns, reusable)`. It is kept for
 *   the next step only when the step cannot have changed it or left
 *   anything running in it: the caller says so (the step's processes are
 *   all gone, which a pid namespace guarantees once its init exited, and
 *   the step had no CAP_NET_ADMIN, so addresses, routes, rules and sysctls
 *   are as CNI set them). What a step can leave is kernel socket state
 *   without a process (TIME_WAIT), as with BuildKit's pool, which reuses
 *   namespaces the same way.
 * - A burst of parallel steps makes more than `size` on demand; once
 *   back, up to `keep` stay ready for the next burst (20 concurrent builds
 *   sharing a base make a burst of 20 RUNs each time), and those above
 *   `size` go, in one `trim` batch, when no step has taken one for
 *   `idleMs`. Tearing a burst's namespaces down after each burst cost more
 *   than the steps' own runc (CNI DEL: the bridge plugin and ~6 iptables
 *   runs each, then the ADDs again at the next burst).
 * - Anything else (a failed, canceled or insecure step, or more than
 *   `keep`) is destroyed in the background; a replacement is made when the
 *   pool is short.
 *
 * `size` 0 turns pooling off: every namespace is made for its step and
 * destroyed after it.
 *
 * `drain(drop)` is for a stopping daemon: it stops filling and hands every
 * ready namespace to `drop` at once, a cheaper teardown than `destroy`
 * (nothing ran in a ready namespace), so a daemon SIGKILLed a moment after
 * SIGTERM leaves none behind.
 */
export class NetnsPool<T> {
  private readonly idle: T[] = [];
  /** Namespaces handed out and not yet back. */
  private inUse = 0;
  private started = false;
  private filling = false;
  private closed = false;
  /** Set by drain: how namespaces made after it are dropped. */
  private drop?: (ns: T[]) => Promise<void>;
  private readonly background = new Set<Promise<void>>();
  private readonly keep: number;
  private readonly idleMs: number;
  private readonly trimSurplus: (ns: T[]) => Promise<void>;
  private lastTake = 0;
  private trimTimer?: NodeJS.Timeout;

  constructor(
    private readonly size: number,
    private readonly create: () => Promise<T>,
    private readonly destroy: (ns: T) => Promise<void>,
    private readonly logger: Logger,
    burst: {
      /** Most namespaces kept ready after a burst (at least `size`). */
      keep: number;
      /** How long the pool stays unused before the namespaces above `size` go. */
      idleMs: number;
      /** Tears idle surplus namespaces down in one batch (they are as CNI set them up). */
      trim: (ns: T[]) => Promise<void>;
    } = { keep: size, idleMs: 0, trim: async (ns) => void (await Promise.all(ns.map((n) => destroy(n)))) },
  ) {
    this.keep = size === 0 ? 0 : Math.max(size, burst.keep);
    this.idleMs = burst.idleMs;
    this.trimSurplus = burst.trim;
  }

  /** A ready namespace, or a new one when none is. */
  async take(): Promise<T> {
    this.inUse++;
    this.lastTake = Date.now();
    try {
      const ready = this.idle.pop();
      if (!this.started) {
        this.started = true;
        this.fill();
      }
      return ready ?? (await this.create());
    } catch (err) {
      this.inUse--;
      throw err;
    }
  }

  /** Gives a namespace back (see the class comment for `reusable`). Never rejects; resolves once it is pooled or destroyed. */
  put(ns: T, reusable: boolean): Promise<void> {
    this.inUse--;
    if (reusable && !this.closed && this.idle.length < this.keep) {
      this.idle.push(ns);
      if (this.idle.length > this.size) this.armTrim(this.idleMs);
      return Promise.resolve();
    }
    const done = this.track(this.destroy(ns));
    if (!reusable) this.fill();
    return done;
  }

  /** How many ready namespaces wait (for specs and logs). */
  get ready(): number {
    return this.idle.length;
  }

  /** Resolves when no background creation or destruction is running. */
  async settled(): Promise<void> {
    while (this.background.size > 0) await Promise.all([...this.background]);
  }

  /** Stops filling, waits for background work and destroys the ready namespaces. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.trimTimer);
    await this.settled();
    for (const ns of this.idle.splice(0)) await this.destroy(ns).catch((err: unknown) => this.logger.warn({ err }, 'failed to remove a pooled step network'));
  }

  /** Stops filling and drops the ready namespaces with `drop` (one batch); close() waits for it too. Never rejects. */
  drain(drop: (ns: T[]) => Promise<void>): Promise<void> {
    this.closed = true;
    clearTimeout(this.trimTimer);
    this.drop ??= drop;
    const ready = this.idle.splice(0);
    return ready.length > 0 ? this.track(drop(ready)) : Promise.resolve();
  }

  /** Makes namespaces one at a time until ready + handed out reach `size`. */
  private fill(): void {
    if (this.filling || this.closed || this.size === 0) return;
    this.filling = true;
    void this.track(
      (async () => {
        try {
          while (!this.closed && this.idle.length + this.inUse < this.size) {
            const ns = await this.create();
            if (this.closed) await (this.drop ? this.drop([ns]) : this.destroy(ns));
            else this.idle.push(ns);
          }
        } finally {
          this.filling = false;
        }
      })(),
    );
  }

  /** After `ms`, trims the ready namespaces above `size` unless one was taken meanwhile (then waits again). */
  private armTrim(ms: number): void {
    if (this.trimTimer) return;
    this.trimTimer = setTimeout(() => {
      this.trimTimer = undefined;
      if (this.closed || this.idle.length <= this.size) return;
      const unused = Date.now() - this.lastTake;
      if (unused < this.idleMs) return this.armTrim(this.idleMs - unused);
      // The least recently used ones (the stack's bottom); `size` stay.
      const surplus = this.idle.splice(0, this.idle.length - this.size);
      void this.track(this.trimSurplus(surplus));
    }, ms);
    this.trimTimer.unref();
  }

  private track(work: Promise<void>): Promise<void> {
    const p = work.catch((err: unknown) => this.logger.warn({ err }, 'step network pool: background work failed'));
    this.background.add(p);
    void p.finally(() => this.background.delete(p));
    return p;
  }
}
