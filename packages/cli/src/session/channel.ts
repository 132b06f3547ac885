/**
 * An unbounded async queue read by one consumer. `push` resolves when the
 * item was taken (so a producer that awaits it is paced by the reader);
 * `close` ends iteration after queued items; `fail` makes the reader throw.
 * Pushes after close/fail are dropped and resolve at once.
 */
export class Channel<T> implements AsyncIterable<T> {
  readonly #items: { value: T; taken: () => void }[] = [];
  #waiter: (() => void) | undefined;
  #closed = false;
  #error: unknown;

  get size(): number {
    return this.#items.length;
  }

  get closed(): boolean {
    return this.#closed;
  }

  push(value: T): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return new Promise((resolve) => {
      this.#items.push({ value, taken: resolve });
      this.#wake();
    });
  }

  close(): void {
    this.#closed = true;
    this.#wake();
  }

  fail(err: unknown): void {
    if (this.#closed) return;
    this.#error = err ?? new Error('channel failed');
    this.#closed = true;
    for (const item of this.#items.splice(0)) item.taken();
    this.#wake();
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    for (;;) {
      const item = this.#items.shift();
      if (item) {
        item.taken();
        yield item.value;
        continue;
      }
      if (this.#error !== undefined) throw this.#error;
      if (this.#closed) return;
      await new Promise<void>((resolve) => {
        this.#waiter = resolve;
      });
    }
  }
}
