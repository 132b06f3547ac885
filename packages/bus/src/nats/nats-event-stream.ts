import { sleep, UnavailableError, type Logger } from '@kiln/common';
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  ErrorCode,
  NatsError,
  nanos,
  nuid,
  RetentionPolicy,
  StorageType,
  type ConsumerConfig,
  type JetStreamClient,
  type JetStreamManager,
  type NatsConnection,
  type StreamConfig,
} from 'nats';
import type { EventStream, EventStreamLimits, StreamConsumeOptions, StreamMessage } from '../bus.js';
import { whenAborted } from '../internal/abort.js';
import { copyBytes } from '../internal/bytes.js';
import { checkStreamSubject, compileStreamLimits, validateEventStream } from '../internal/event-stream.js';
import { validateName, validateSubject } from '../subject.js';
import { fromNatsError, isNotFound } from './nats-errors.js';

/** What an event stream needs from its bus. */
export interface NatsEventStreamContext {
  readonly nc: NatsConnection;
  readonly logger: Logger;
  /** Aborted when the bus closes. */
  readonly closing: AbortController;
  jetstreamManager(): Promise<JetStreamManager>;
  trackConsumer(run: Promise<void>): void;
  checkOpen(what: string): void;
  /** False between a disconnect and the next reconnect. */
  isConnected(): boolean;
  /** Resolves at the next reconnect (or when the bus closes). */
  whenConnected(): Promise<void>;
  /** Bumped at every reconnect: a reader compares it to notice that its connection was broken. */
  connectionEpoch(): number;
  /** Date.now() of the last reconnect; 0 when the connection never broke. */
  lastReconnectAt(): number;
  /** Bound of each stream's outbox. */
  readonly eventOutboxMaxBytes: number;
}

/** Default bound of the bytes of events kept while they cannot be stored. */
export const STREAM_OUTBOX_MAX_BYTES = 16 * 1024 * 1024;
/** Events sent before waiting for their acknowledgements. */
const PUBLISH_WINDOW = 64;
/** How long one acknowledgement may take before the event is sent again. */
const ACK_TIMEOUT_MS = 5000;
/** How long JetStream remembers event ids to drop an event sent twice (a lost acknowledgement). */
const DUPLICATE_WINDOW_MS = 120_000;
/**
 * After a reconnect, how long other clients get to reconnect (they retry
 * every second) and store what they kept before readers count as caught up.
 */
const SETTLE_AFTER_RECONNECT_MS = 4000;
/** Longest a pull waits on the server; bounds how long a reader takes to stop or notice a reconnect. */
const PULL_EXPIRES_MS = 1000;
const PULL_BATCH = 256;
/** A reader's consumer vanishes this long after its reader stopped pulling (it is recreated on every reconnect). */
const CONSUMER_INACTIVE_MS = 30_000;

interface Pending {
  readonly subject: string;
  readonly data: Uint8Array;
  /** JetStream's `Nats-Msg-Id`: a resend after a lost acknowledgement is stored once. */
  readonly msgId: string;
  dropped: boolean;
}

/** Raised inside a reader when its consumer must be recreated after the last event handled. */
class ResetReader extends Error {}

/**
 * An EventStream on a JetStream stream (file storage, limits retention).
 * Publishing goes through an outbox: events are sent with acknowledgements,
 * a window at a time, and resent (same message id, so JetStream stores each
 * once) until stored. Reading is an ordered pull consumer of this process:
 * it remembers the stream sequence of the last event handled and, after any
 * error, reconnect or gap, makes a new consumer starting right after it.
 */
export class NatsEventStream implements EventStream {
  readonly subjects: readonly string[];
  private readonly outbox: Pending[] = [];
  private outboxBytes = 0;
  private dropped = 0;
  private pumping: Promise<void> | undefined;
  private readonly idle = new Set<() => void>();
  private readonly idPrefix = nuid.next();
  private counter = 0;
  private limits: Required<EventStreamLimits> | undefined;
  /** Readers running in this process: their current consumer's name and how many of its deliveries were handled. */
  private readonly readers = new Set<{ consumer: string | undefined; handled: number }>();
  private jsClient: JetStreamClient | undefined;

  constructor(
    readonly name: string,
    subjects: readonly string[],
    private readonly ctx: NatsEventStreamContext,
  ) {
    validateEventStream(name, subjects);
    this.subjects = [...subjects];
  }

  private get js(): JetStreamClient {
    this.jsClient ??= this.ctx.nc.jetstream();
    return this.jsClient;
  }

  async ensure(limits?: EventStreamLimits): Promise<void> {
    const l = compileStreamLimits(limits);
    const what = `set up event stream ${this.name}`;
    this.ctx.checkOpen(what);
    let jsm: JetStreamManager;
    try {
      jsm = await this.ctx.jetstreamManager();
    } catch (err) {
      if (err instanceof NatsError && err.code === ErrorCode.JetStreamNotEnabled) {
        throw new UnavailableError(`failed to ${what}: JetStream is not enabled on the NATS server (run it with -js and a store dir, or jetstream {} in its config)`, { stream: this.name }, { cause: err });
      }
      throw fromNatsError(err, what, { stream: this.name });
    }
    const cfg: Partial<StreamConfig> = {
      name: this.name,
      subjects: [...this.subjects],
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      discard: DiscardPolicy.Old,
      max_age: nanos(l.maxAgeMs),
      max_bytes: l.maxBytes,
      duplicate_window: nanos(Math.min(DUPLICATE_WINDOW_MS, l.maxAgeMs)),
      num_replicas: 1,
    };
    try {
      const info = await jsm.streams.info(this.name);
      const c = info.config;
      const same = c.max_age === cfg.max_age && c.max_bytes === cfg.max_bytes && c.subjects.length === this.subjects.length && this.subjects.every((s) => c.subjects.includes(s));
      if (!same) {
        await jsm.streams.update(this.name, { ...c, subjects: cfg.subjects!, max_age: cfg.max_age!, max_bytes: cfg.max_bytes!, duplicate_window: cfg.duplicate_window! });
        this.ctx.logger.info({ stream: this.name, maxAgeMs: l.maxAgeMs, maxBytes: l.maxBytes }, 'event stream limits updated');
      }
    } catch (err) {
      if (!isNotFound(err)) throw fromNatsError(err, what, { stream: this.name });
      try {
        await jsm.streams.add(cfg);
        this.ctx.logger.info({ stream: this.name, subjects: this.subjects, maxAgeMs: l.maxAgeMs, maxBytes: l.maxBytes }, 'event stream created');
      } catch (addErr) {
        // Another solver may have created it meanwhile.
        await jsm.streams.info(this.name).catch(() => {
          throw fromNatsError(addErr, what, { stream: this.name });
        });
      }
    }
    this.limits = l;
  }

  async publish(subject: string, data: Uint8Array): Promise<void> {
    checkStreamSubject(this.name, this.subjects, subject);
    this.ctx.checkOpen(`publish on ${subject}`);
    const entry: Pending = { subject, data: copyBytes(data), msgId: `${this.idPrefix}-${++this.counter}`, dropped: false };
    this.outbox.push(entry);
    this.outboxBytes += entry.data.length;
    while (this.outboxBytes > this.ctx.eventOutboxMaxBytes && this.outbox.length > 1) {
      const old = this.outbox.shift()!;
      old.dropped = true;
      this.outboxBytes -= old.data.length;
      if (this.dropped++ === 0) {
        this.ctx.logger.warn({ stream: this.name, maxBytes: this.ctx.eventOutboxMaxBytes }, 'event stream unreachable and its outbox is full: dropping the oldest build events (the client will miss them)');
      }
    }
    this.kick();
  }

  /** Starts the pump unless it runs; a publish landing while it finishes starts it again. */
  private kick(): void {
    this.pumping ??= this.pump().finally(() => {
      this.pumping = undefined;
      if (this.outbox.length > 0 && !this.ctx.closing.signal.aborted) this.kick();
      else for (const r of [...this.idle]) r();
    });
  }

  /** Sends the outbox a window at a time until it is empty, waiting out outages. */
  private async pump(): Promise<void> {
    let failures = 0;
    let firstFailure: string | undefined;
    while (this.outbox.length > 0 && !this.ctx.closing.signal.aborted) {
      if (!this.ctx.isConnected()) {
        await this.ctx.whenConnected();
        continue;
      }
      const batch = this.outbox.slice(0, PUBLISH_WINDOW);
      const results = await Promise.allSettled(
        batch.map((e) => this.js.publish(e.subject, e.data, { msgID: e.msgId, expect: { streamName: this.name }, timeout: ACK_TIMEOUT_MS })),
      );
      let failed: unknown;
      for (let i = 0; i < batch.length; i++) {
        const e = batch[i]!;
        const r = results[i]!;
        if (r.status === 'rejected') {
          failed ??= r.reason;
          continue;
        }
        if (e.dropped) continue;
        const at = this.outbox.indexOf(e);
        if (at >= 0) {
          this.outbox.splice(at, 1);
          this.outboxBytes -= e.data.length;
        }
      }
      if (failed === undefined) {
        if (failures > 0 || this.dropped > 0) {
          this.ctx.logger.info({ stream: this.name, failures, dropped: this.dropped }, 'event stream reachable again: stored the events kept meanwhile');
        }
        failures = 0;
        this.dropped = 0;
        continue;
      }
      failures++;
      const reason = describePublishError(failed, this.name);
      if (failures === 1 || reason !== firstFailure) {
        firstFailure = reason;
        this.ctx.logger.warn({ stream: this.name, reason, queued: this.outbox.length }, 'failed to store build events; keeping them and retrying');
      }
      await sleep(Math.min(250 * 2 ** (failures - 1), 2000), this.ctx.closing.signal).catch(() => {});
    }
  }

  flush(timeoutMs: number): Promise<boolean> {
    if (this.outbox.length === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.idle.delete(done);
        resolve(this.outbox.length === 0);
      };
      const timer = setTimeout(done, timeoutMs);
      this.idle.add(done);
    });
  }

  async settle(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    const left = () => deadline - Date.now();
    const connectedFor = () => (this.ctx.isConnected() ? Date.now() - this.ctx.lastReconnectAt() : -1);
    if (this.ctx.lastReconnectAt() === 0 && this.ctx.isConnected()) return true; // never broken
    if (connectedFor() > SETTLE_AFTER_RECONNECT_MS + 60_000) return true; // long since back: readers have caught up
    while (!this.ctx.isConnected()) {
      if (left() <= 0 || this.ctx.closing.signal.aborted) return false;
      await Promise.race([this.ctx.whenConnected(), sleep(left())]);
    }
    const wait = SETTLE_AFTER_RECONNECT_MS - connectedFor();
    if (wait > 0) await sleep(Math.min(wait, Math.max(left(), 0)));
    for (;;) {
      if (await this.readersCaughtUp()) return true;
      if (left() <= 0 || this.ctx.closing.signal.aborted) return false;
      await sleep(Math.min(100, left()));
    }
  }

  /** Whether every reader's consumer has nothing left to deliver and all it delivered was handled. */
  private async readersCaughtUp(): Promise<boolean> {
    try {
      const jsm = await this.ctx.jetstreamManager();
      for (const r of this.readers) {
        if (!r.consumer) return false;
        const info = await jsm.consumers.info(this.name, r.consumer);
        // (delivered.stream_seq runs past events the filter skips, so count the consumer's own deliveries.)
        if (info.num_pending > 0 || info.delivered.consumer_seq > r.handled) return false;
      }
      return true;
    } catch {
      return false;
    }
  }

  /** True when the server answers that the stream does not exist (not for a missing consumer or an unreachable server). */
  private async streamMissing(): Promise<boolean> {
    try {
      await (await this.ctx.jetstreamManager()).streams.info(this.name);
      return false;
    } catch (err) {
      return isNotFound(err);
    }
  }

  async consume(filter: string, handler: (m: StreamMessage) => void | Promise<void>, opts: StreamConsumeOptions): Promise<void> {
    validateSubject(filter, true);
    validateName(opts.name, 'name');
    this.ctx.checkOpen(`read event stream ${this.name}`);
    const run = this.readLoop(filter, handler, opts);
    this.ctx.trackConsumer(run);
    await run;
  }

  private async readLoop(filter: string, handler: (m: StreamMessage) => void | Promise<void>, opts: StreamConsumeOptions): Promise<void> {
    const { logger } = this.ctx;
    const stops = [whenAborted(opts.signal), whenAborted(this.ctx.closing.signal)];
    const isStopped = () => opts.signal.aborted || this.ctx.closing.signal.aborted;
    /** Stream sequence of the last event handled; 0 before the first. */
    let lastSeq = 0;
    const self = { consumer: undefined as string | undefined, handled: 0 };
    this.readers.add(self);
    /** Deliver everything in the stream (it was recreated: its sequences start again). */
    let fromStart = false;
    let failures = 0;
    let announced = false;
    let consumerName: string | undefined;
    let current: { stop(): void } | undefined;
    void Promise.race(stops.map((s) => s.promise)).then(() => current?.stop());
    try {
      while (!isStopped()) {
        try {
          const jsm = await this.ctx.jetstreamManager();
          if (consumerName) await jsm.consumers.delete(this.name, consumerName).catch(() => {});
          consumerName = `${opts.name}-${nuid.next()}`;
          const cfg: Partial<ConsumerConfig> = {
            name: consumerName,
            filter_subject: filter,
            ack_policy: AckPolicy.All,
            inactive_threshold: nanos(CONSUMER_INACTIVE_MS),
            mem_storage: true,
            num_replicas: 1,
            ...(lastSeq > 0 && !fromStart
              ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: lastSeq + 1 }
              : { deliver_policy: fromStart ? DeliverPolicy.All : DeliverPolicy.New }),
          };
          self.consumer = undefined;
          self.handled = 0;
          await jsm.consumers.add(this.name, cfg);
          self.consumer = consumerName;
          fromStart = false;
          const consumer = await this.js.consumers.get(this.name, consumerName);
          const epoch = this.ctx.connectionEpoch();
          if (!announced) {
            announced = true;
            opts.onReady?.();
          }
          if (failures > 0) logger.info({ stream: this.name, after: lastSeq }, 'event stream reader resumed');
          failures = 0;
          let delivered = 0;
          while (!isStopped()) {
            if (this.ctx.connectionEpoch() !== epoch) throw new ResetReader('the connection was re-established');
            const batch = await consumer.fetch({ max_messages: PULL_BATCH, expires: PULL_EXPIRES_MS });
            current = { stop: () => void batch.stop() };
            let last: { ack(): void } | undefined;
            for await (const m of batch) {
              // A gap in the consumer's own numbering: something was lost on the way. Start again after the last one handled.
              if (m.info.deliverySequence !== delivered + 1 || m.seq <= lastSeq) throw new ResetReader(`delivery ${m.info.deliverySequence} after ${delivered}`);
              delivered++;
              try {
                await handler({ subject: m.subject, data: copyBytes(m.data), seq: m.seq });
              } catch (err) {
                logger.warn({ err, stream: this.name, subject: m.subject }, 'event stream handler failed');
              }
              lastSeq = m.seq;
              self.handled = delivered;
              last = m;
            }
            try {
              last?.ack();
            } catch {
              // the connection went away: the next round recreates the consumer
            }
          }
        } catch (err) {
          if (isStopped()) break;
          failures++;
          if (isNotFound(err) && (await this.streamMissing())) {
            // The stream is gone (a server without its store came back): make it again, then read it from its start.
            if (this.limits) await this.ensure(this.limits).catch(() => {});
            fromStart = true;
            lastSeq = 0;
          }
          const delayMs = err instanceof ResetReader ? 0 : Math.min(100 * 2 ** failures, 2000);
          if (!(err instanceof ResetReader) && (failures === 1 || failures % 30 === 0)) {
            logger.warn({ err: (err as Error).message, stream: this.name, after: lastSeq, delayMs }, 'event stream read failed; resuming after the last event handled');
          }
          if (!this.ctx.isConnected()) await Promise.race([this.ctx.whenConnected(), ...stops.map((s) => s.promise)]);
          else if (delayMs > 0) await sleep(delayMs, opts.signal).catch(() => {});
        }
      }
    } finally {
      this.readers.delete(self);
      for (const s of stops) s.dispose();
      if (consumerName && !this.ctx.nc.isClosed()) {
        const name = consumerName;
        await this.ctx
          .jetstreamManager()
          .then((jsm) => jsm.consumers.delete(this.name, name))
          .catch(() => {});
      }
    }
  }
}

/** One line about a failed publish, for the log. */
function describePublishError(err: unknown, stream: string): string {
  if (err instanceof NatsError && err.code === ErrorCode.NoResponders) return `no JetStream stream stores these subjects yet (the solver creates ${stream} at start)`;
  if (err instanceof NatsError && err.code === ErrorCode.Timeout) return 'no acknowledgement in time';
  return err instanceof Error ? err.message : String(err);
}
