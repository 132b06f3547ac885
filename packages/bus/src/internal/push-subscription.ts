import type { Message, Subscription } from '../bus.js';

/**
 * A Subscription fed by a backend through `push()`. Buffers without bound;
 * after `unsubscribe()` (or abort, or `end()`), drops the buffer and ends
 * every pending and later `next()`.
 */
export class PushSubscription implements Subscription {
  private buffer: Message[] = [];
  private waiters: Array<(r: IteratorResult<Message>) => void> = [];
  private ended = false;
  private readonly onAbort = () => this.unsubscribe();

  /**
   * @param onEnd called once when the subscription ends, for the backend to
   *   release its side (remove it from the table, unsubscribe on the wire).
   */
  constructor(
    readonly subject: string,
    private readonly onEnd: () => void,
    private readonly signal?: AbortSignal,
  ) {
    if (signal?.aborted) {
      queueMicrotask(() => this.unsubscribe());
    } else {
      signal?.addEventListener('abort', this.onAbort, { once: true });
    }
  }

  get isEnded(): boolean {
    return this.ended;
  }

  push(message: Message): void {
    if (this.ended) return;
    const waiter = this.waiters.shift();
    if (waiter) waiter({ value: message, done: false });
    else this.buffer.push(message);
  }

  /** Ends the iteration without calling `onEnd` (the backend is already gone). */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.buffer = [];
    this.signal?.removeEventListener('abort', this.onAbort);
    for (const w of this.waiters.splice(0)) w({ value: undefined, done: true });
  }

  unsubscribe(): void {
    if (this.ended) return;
    this.end();
    this.onEnd();
  }

  [Symbol.asyncIterator](): AsyncIterator<Message> {
    return {
      next: () => {
        const m = this.buffer.shift();
        if (m) return Promise.resolve({ value: m, done: false });
        if (this.ended) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => this.waiters.push(resolve));
      },
      return: () => {
        this.unsubscribe();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}
