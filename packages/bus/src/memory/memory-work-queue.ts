import type { Logger } from '@kiln/common';
import type { ConsumeOptions, WorkHandler } from '../bus.js';
import { whenAborted } from '../internal/abort.js';
import { compileConsumeOptions, type CompiledConsumeOptions } from '../internal/options.js';
import { copyBytes } from '../internal/bytes.js';

interface Item {
  readonly data: Uint8Array;
  attempt: number;
}

interface Consumer {
  readonly handler: WorkHandler;
  readonly opts: CompiledConsumeOptions;
  active: number;
  readonly inflight: Set<Promise<void>>;
}

/** One named in-process work queue, shared by every handle of that name on a bus. */
export class MemoryWorkQueueState {
  private readonly items: Item[] = [];
  private readonly consumers: Consumer[] = [];
  private readonly running = new Set<Promise<void>>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private next = 0;

  constructor(
    readonly name: string,
    private readonly closing: AbortSignal,
    private readonly logger: Logger,
  ) {
    closing.addEventListener('abort', () => {
      for (const t of this.timers) clearTimeout(t);
      this.timers.clear();
    });
  }

  push(data: Uint8Array): void {
    this.items.push({ data: copyBytes(data), attempt: 0 });
    this.pump();
  }

  async consume(handler: WorkHandler, opts: ConsumeOptions): Promise<void> {
    const compiled = compileConsumeOptions(opts);
    const consumer: Consumer = { handler, opts: compiled, active: 0, inflight: new Set() };
    const stop = [whenAborted(compiled.signal), whenAborted(this.closing)];
    const run = (async () => {
      this.consumers.push(consumer);
      this.pump();
      try {
        await Promise.race(stop.map((s) => s.promise));
      } finally {
        for (const s of stop) s.dispose();
        this.consumers.splice(this.consumers.indexOf(consumer), 1);
        await Promise.all([...consumer.inflight]);
      }
    })();
    this.running.add(run);
    try {
      await run;
    } finally {
      this.running.delete(run);
    }
  }

  /** Resolves once every consumer has stopped (after the bus closes). */
  async stopped(): Promise<void> {
    await Promise.all([...this.running]);
  }

  /** Hands queued items to consumers with a free slot, round robin. */
  private pump(): void {
    while (this.items.length > 0) {
      const consumer = this.pickConsumer();
      if (!consumer) return;
      this.run(consumer, this.items.shift() as Item);
    }
  }

  private pickConsumer(): Consumer | undefined {
    const n = this.consumers.length;
    for (let i = 0; i < n; i++) {
      const c = this.consumers[(this.next + i) % n] as Consumer;
      if (c.active < c.opts.concurrency) {
        this.next = (this.next + i + 1) % n;
        return c;
      }
    }
    return undefined;
  }

  private run(consumer: Consumer, item: Item): void {
    consumer.active++;
    item.attempt++;
    const attempt = item.attempt;
    const p = Promise.resolve()
      .then(() => consumer.handler(copyBytes(item.data), { attempt }))
      .then(
        () => undefined,
        (err: unknown) => {
          this.logger.debug({ err, queue: this.name, attempt }, 'work item failed; redelivering');
          this.redeliver(item, consumer.opts.redeliveryDelayMs);
        },
      )
      .finally(() => {
        consumer.active--;
        consumer.inflight.delete(p);
        this.pump();
      });
    consumer.inflight.add(p);
  }

  private redeliver(item: Item, delayMs: number): void {
    if (this.closing.aborted) return;
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      this.items.push(item);
      this.pump();
    }, delayMs);
    this.timers.add(timer);
  }
}
