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
 * - Anything else (a failed, canceled or insecure step, or more namespaces
 *   than `size` after a burst of parallel steps) is destroyed in the
 *   background; a replacement is made when the pool is short.
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

  constructor(
    private readonly size: number,
    private readonly create: () => Promise<T>,
    private readonly destroy: (ns: T) => Promise<void>,
    private readonly logger: Logger,
  ) {}

  /** A ready namespace, or a new one when none is. */
  async take(): Promise<T> {
    this.inUse++;
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
    if (reusable && !this.closed && this.idle.length < this.size) {
      this.idle.push(ns);
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
    await this.settled();
    for (const ns of this.idle.splice(0)) await this.destroy(ns).catch((err: unknown) => this.logger.warn({ err }, 'failed to remove a pooled step network'));
  }

  /** Stops filling and drops the ready namespaces with `drop` (one batch); close() waits for it too. Never rejects. */
  drain(drop: (ns: T[]) => Promise<void>): Promise<void> {
    this.closed = true;
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

  private track(work: Promise<void>): Promise<void> {
    const p = work.catch((err: unknown) => this.logger.warn({ err }, 'step network pool: background work failed'));
    this.background.add(p);
    void p.finally(() => this.background.delete(p));
    return p;
  }
}
