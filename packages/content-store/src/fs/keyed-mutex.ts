/** Runs tasks one at a time per key (in call order); different keys run concurrently. */
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<void>>();

  /** Queues `task` behind the tasks of `key`; the place in the queue is taken synchronously. */
  async run<T>(key: string, task: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => {
      release = resolve;
    });
    const tail = previous.then(() => mine);
    this.tails.set(key, tail);
    await previous;
    try {
      return await task();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }

  /** Whether a task for `key` runs or waits now. */
  busy(key: string): boolean {
    return this.tails.has(key);
  }

  /** Keys with a task running or waiting. */
  keys(): IterableIterator<string> {
    return this.tails.keys();
  }
}
