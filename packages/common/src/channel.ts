/**
 * An unbounded async queue: producers `push`, one consumer iterates. `end()`
 * finishes iteration after queued items; `fail(err)` makes the next read throw.
 * Used to feed request streams of bidi RPCs and to relay session data.
 */
export interface Channel<T> extends AsyncIterable<T> {
  push(value: T): void;
  end(): void;
  fail(err: unknown): void;
  /** True once end() or fail() was called. */
  readonly closed: boolean;
}

export function createChannel<T>(): Channel<T> {
  const items: T[] = [];
  let done = false;
  let error: unknown;
  let failed = false;
  let wake: (() => void) | undefined;
  const signal = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  return {
    push(value: T) {
      if (done) return;
      items.push(value);
      signal();
    },
    end() {
      done = true;
      signal();
    },
    fail(err: unknown) {
      if (done) return;
      done = true;
      failed = true;
      error = err;
      signal();
    },
    get closed() {
      return done;
    },
    async *[Symbol.asyncIterator]() {
      for (;;) {
        if (items.length > 0) {
          yield items.shift()!;
          continue;
        }
        if (failed) throw error;
        if (done) return;
        await new Promise<void>((resolve) => (wake = resolve));
      }
    },
  };
}
