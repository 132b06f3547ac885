/**
 * An unbounded async queue: producers `push`, one consumer iterates. `end()`
 * finishes iteration after queued items; `fail(err)` makes the read after the
 * queued items throw; `abort(err)` drops the queued items and makes the next
 * read throw. Pushes after any of them are dropped.
 * Used to feed request streams of bidi RPCs and to relay session data.
 */
export interface Channel<T> extends AsyncIterable<T> {
  /**
   * Queues `value`. The promise (which never rejects) resolves once the
   * reader took the item, so a producer that awaits it is paced by the
   * reader; at once when the channel is closed, and for queued items that
   * `abort` dropped. Ignoring it is fine.
   */
  push(value: T): Promise<void>;
  end(): void;
  fail(err: unknown): void;
  /**
   * Fails the channel at once: queued items are dropped (their pushes
   * resolve) and the reader throws `err` on its next read. Use it when the
   * reader may be gone, so paced producers are released.
   */
  abort(err: unknown): void;
  /** True once end(), fail() or abort() was called. */
  readonly closed: boolean;
  /** Items queued and not yet taken by the reader. */
  readonly size: number;
}

export function createChannel<T>(): Channel<T> {
  const items: { value: T; taken: () => void }[] = [];
  let done = false;
  let error: unknown;
  let failed = false;
  let wake: (() => void) | undefined;
  const signal = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const fail = (err: unknown) => {
    done = true;
    failed = true;
    error = err;
    signal();
  };
  return {
    push(value: T) {
      if (done) return Promise.resolve();
      return new Promise<void>((taken) => {
        items.push({ value, taken });
        signal();
      });
    },
    end() {
      done = true;
      signal();
    },
    fail(err: unknown) {
      if (done) return;
      fail(err);
    },
    abort(err: unknown) {
      if (done) return;
      for (const item of items.splice(0)) item.taken();
      fail(err ?? new Error('channel failed'));
    },
    get closed() {
      return done;
    },
    get size() {
      return items.length;
    },
    async *[Symbol.asyncIterator]() {
      for (;;) {
        const item = items.shift();
        if (item) {
          item.taken();
          yield item.value;
          continue;
        }
        if (failed) throw error;
        if (done) return;
        await new Promise<void>((resolve) => (wake = resolve));
      }
    },
  };
}
