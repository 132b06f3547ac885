import { sleep, UnavailableError, type Logger } from '@kiln/common';
import {
  AckPolicy,
  DeliverPolicy,
  ErrorCode,
  NatsError,
  nanos,
  RetentionPolicy,
  StorageType,
  type Consumer,
  type JetStreamManager,
  type JsMsg,
  type NatsConnection,
} from 'nats';
import type { ConsumeOptions, WorkHandler, WorkQueue } from '../bus.js';
import { whenAborted } from '../internal/abort.js';
import { compileConsumeOptions, type CompiledConsumeOptions } from '../internal/options.js';
import { fromNatsError, isNotFound } from './nats-errors.js';
import { copyBytes } from '../internal/bytes.js';

/** What a work queue needs from its bus. */
export interface NatsWorkQueueContext {
  readonly nc: NatsConnection;
  readonly logger: Logger;
  /** Aborted when the bus closes. */
  readonly closing: AbortController;
  jetstreamManager(): Promise<JetStreamManager>;
  /** Lets close() wait for the consumer loop. */
  trackConsumer(run: Promise<void>): void;
  checkOpen(what: string): void;
}

/** Stream `KILN_WQ_<name>` on subject `kiln.wq.<name>`, read through one shared durable. */
export const workQueueNaming = {
  stream: (name: string) => `KILN_WQ_${name}`,
  subject: (name: string) => `kiln.wq.${name}`,
  durable: 'kiln-workers',
} as const;

/** A handler must finish or show progress within this; the bus heartbeats for it. */
const ACK_WAIT_MS = 30_000;
/** Longest a pull waits on the server; bounds how long consume() takes to stop. */
const PULL_EXPIRES_MS = 1_000;

/**
 * A work queue on JetStream: a stream with WorkQueue retention (an item is
 * removed once acknowledged) and one durable pull consumer that every
 * consumer of the queue pulls from, so each item goes to one of them.
 */
export class NatsWorkQueue implements WorkQueue {
  private ready: Promise<void> | undefined;
  private readonly stream: string;
  private readonly subject: string;

  constructor(
    readonly name: string,
    private readonly ctx: NatsWorkQueueContext,
  ) {
    this.stream = workQueueNaming.stream(name);
    this.subject = workQueueNaming.subject(name);
  }

  async push(data: Uint8Array): Promise<void> {
    const what = `push to work queue ${this.name}`;
    this.ctx.checkOpen(what);
    await this.ensure();
    const js = this.ctx.nc.jetstream();
    try {
      await js.publish(this.subject, copyBytes(data), { expect: { streamName: this.stream } });
    } catch (err) {
      if (err instanceof NatsError && err.code === ErrorCode.NoResponders) {
        // The stream went away (e.g. a server without persistence restarted): recreate once.
        this.ready = undefined;
        await this.ensure();
        try {
          await js.publish(this.subject, copyBytes(data), { expect: { streamName: this.stream } });
          return;
        } catch (err2) {
          throw fromNatsError(err2, what, { queue: this.name });
        }
      }
      throw fromNatsError(err, what, { queue: this.name });
    }
  }

  async consume(handler: WorkHandler, opts: ConsumeOptions): Promise<void> {
    const o = compileConsumeOptions(opts);
    this.ctx.checkOpen(`consume work queue ${this.name}`);
    await this.ensure();
    const run = this.pullLoop(handler, o);
    this.ctx.trackConsumer(run);
    await run;
  }

  /** Creates the stream and the durable consumer once (both idempotent on the server). */
  private ensure(): Promise<void> {
    this.ready ??= this.create().catch((err: unknown) => {
      this.ready = undefined;
      throw err;
    });
    return this.ready;
  }

  private async create(): Promise<void> {
    const what = `set up work queue ${this.name}`;
    let jsm: JetStreamManager;
    try {
      jsm = await this.ctx.jetstreamManager();
    } catch (err) {
      if (err instanceof NatsError && err.code === ErrorCode.JetStreamNotEnabled) {
        throw new UnavailableError(`failed to ${what}: JetStream is not enabled on the NATS server`, { queue: this.name }, { cause: err });
      }
      throw fromNatsError(err, what, { queue: this.name });
    }
    try {
      await jsm.streams.info(this.stream);
    } catch (err) {
      if (!isNotFound(err)) throw fromNatsError(err, what, { queue: this.name });
      try {
        await jsm.streams.add({
          name: this.stream,
          subjects: [this.subject],
          retention: RetentionPolicy.Workqueue,
          storage: StorageType.File,
        });
      } catch (addErr) {
        // Another process may have created it meanwhile; accept it if it exists now.
        await jsm.streams.info(this.stream).catch(() => {
          throw fromNatsError(addErr, what, { queue: this.name });
        });
      }
    }
    try {
      await jsm.consumers.info(this.stream, workQueueNaming.durable);
    } catch (err) {
      if (!isNotFound(err)) throw fromNatsError(err, what, { queue: this.name });
      try {
        await jsm.consumers.add(this.stream, {
          durable_name: workQueueNaming.durable,
          ack_policy: AckPolicy.Explicit,
          deliver_policy: DeliverPolicy.All,
          ack_wait: nanos(ACK_WAIT_MS),
          max_deliver: -1,
          max_ack_pending: -1,
        });
      } catch (addErr) {
        await jsm.consumers.info(this.stream, workQueueNaming.durable).catch(() => {
          throw fromNatsError(addErr, what, { queue: this.name });
        });
      }
    }
  }

  /**
   * Pulls as many items as there are free slots and runs them. A pull is
   * never abandoned: on stop the loop lets the outstanding one expire and
   * hands back (naks) whatever it still brings, so no item waits out the
   * ack timeout on a consumer that is gone.
   */
  private async pullLoop(handler: WorkHandler, o: CompiledConsumeOptions): Promise<void> {
    const { logger } = this.ctx;
    const stops = [whenAborted(o.signal), whenAborted(this.ctx.closing.signal)];
    const stopped = Promise.race(stops.map((s) => s.promise));
    const isStopped = () => o.signal.aborted || this.ctx.closing.signal.aborted;
    const inflight = new Set<Promise<void>>();
    let free = o.concurrency;
    let slotFreed: () => void = () => {};
    let consumer: Consumer | undefined;
    let failures = 0;
    try {
      while (!isStopped()) {
        if (free === 0) {
          await Promise.race([new Promise<void>((r) => (slotFreed = r)), stopped]);
          continue;
        }
        try {
          await this.ensure();
          consumer ??= await this.ctx.nc.jetstream().consumers.get(this.stream, workQueueNaming.durable);
          const batch = await consumer.fetch({ max_messages: free, expires: PULL_EXPIRES_MS });
          for await (const m of batch) {
            if (isStopped()) {
              m.nak();
              continue;
            }
            free--;
            const p = this.handle(m, handler, o).finally(() => {
              free++;
              inflight.delete(p);
              slotFreed();
            });
            inflight.add(p);
          }
          failures = 0;
        } catch (err) {
          if (isStopped()) break;
          failures++;
          consumer = undefined;
          if (isNotFound(err)) this.ready = undefined;
          const delayMs = Math.min(100 * 2 ** failures, 5000);
          logger.warn({ err, queue: this.name, delayMs }, 'work queue pull failed; retrying');
          await sleep(delayMs, o.signal).catch(() => {});
        }
      }
    } finally {
      for (const s of stops) s.dispose();
      await Promise.allSettled([...inflight]);
    }
  }

  private async handle(m: JsMsg, handler: WorkHandler, o: CompiledConsumeOptions): Promise<void> {
    const { logger } = this.ctx;
    const attempt = m.info.deliveryCount;
    const heartbeat = setInterval(() => {
      try {
        m.working();
      } catch {
        // connection gone: the item will be redelivered after ACK_WAIT_MS
      }
    }, ACK_WAIT_MS / 3);
    let ok = false;
    try {
      await handler(copyBytes(m.data), { attempt });
      ok = true;
    } catch (err) {
      logger.debug({ err, queue: this.name, attempt }, 'work item failed; redelivering');
    } finally {
      clearInterval(heartbeat);
    }
    try {
      if (ok) await m.ackAck();
      else m.nak(o.redeliveryDelayMs);
    } catch (err) {
      logger.warn({ err, queue: this.name, attempt }, `failed to ${ok ? 'ack' : 'nak'} a work item; it will be redelivered`);
    }
  }
}
