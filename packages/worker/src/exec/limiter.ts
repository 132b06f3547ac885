/**
 * A counting semaphore: at most `limit` holders at once, the rest wait in
 * arrival order. A waiter whose signal aborts leaves the queue and rejects
 * with the abort reason.
 */
export class Limiter {
  private active = 0;
  private readonly waiting: { wake: () => void }[] = [];

  constructor(private readonly limit: number) {}

  /** Waits for a slot; call the returned function exactly once to free it. */
  async acquire(signal?: AbortSignal): Promise<() => void> {
    signal?.throwIfAborted();
    if (this.active < this.limit) {
      this.active++;
      return this.releaser();
    }
    await new Promise<void>((resolve, reject) => {
      const entry = {
        wake: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      const onAbort = () => {
        const i = this.waiting.indexOf(entry);
        if (i >= 0) this.waiting.splice(i, 1);
        reject(signal!.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiting.push(entry);
    });
    return this.releaser();
  }

  private releaser(): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = this.waiting.shift();
      // The slot passes straight to the next waiter.
      if (next) next.wake();
      else this.active--;
    };
  }
}
