import { KilnError, silentLogger, UnavailableError, type Logger } from '@kiln/common';
import type {
  EventBus,
  EventStream,
  Message,
  RequestHandler,
  RequestOptions,
  ServeOptions,
  Service,
  SubscribeOptions,
  Subscription,
  WorkQueue,
} from '../bus.js';
import { canceled } from '../internal/abort.js';
import { compileRequestOptions } from '../internal/options.js';
import { PushSubscription } from '../internal/push-subscription.js';
import { decodeHandlerError, encodeHandlerError } from '../internal/reply.js';
import { subjectMatches, validateName, validateSubject } from '../subject.js';
import { MemoryWorkQueueState } from './memory-work-queue.js';
import { copyBytes } from '../internal/bytes.js';
import { checkStreamSubject, compileStreamLimits, validateEventStream } from '../internal/event-stream.js';

export interface MemoryBusOptions {
  /** Child logger for handler failures; default silent. */
  logger?: Logger;
}

/**
 * An EventBus inside one process: the all-in-one daemon's bus and the one
 * unit tests use. Same contract as NATS, minus the network: work queues are
 * durable only for the life of the bus.
 */
export function createMemoryBus(opts: MemoryBusOptions = {}): EventBus {
  return new MemoryBusImpl(opts.logger ?? silentLogger());
}

/** What a route hands each subscription; `fail` answers a request with an error. */
interface Delivery extends Message {
  readonly fail?: (encodedError: string) => void;
}

interface Route {
  readonly pattern: string;
  readonly queue: string | undefined;
  readonly sub: PushSubscription;
}

interface Pending {
  resolve(data: Uint8Array): void;
  reject(err: Error): void;
}

class MemoryBusImpl implements EventBus {
  private readonly routes = new Set<Route>();
  private readonly roundRobin = new Map<string, number>();
  private readonly queues = new Map<string, MemoryWorkQueueState>();
  private readonly services = new Set<MemoryService>();
  private readonly pending = new Set<Pending>();
  private readonly closing = new AbortController();
  private isClosed = false;
  private resolveClosed!: () => void;
  private readonly closedPromise = new Promise<void>((r) => (this.resolveClosed = r));

  constructor(private readonly logger: Logger) {}

  async publish(subject: string, data: Uint8Array): Promise<void> {
    validateSubject(subject, false);
    this.checkOpen('publish');
    this.route(subject, data);
  }

  subscribe(subject: string, opts: SubscribeOptions = {}): Subscription {
    return this.subscribeInternal(subject, opts);
  }

  private subscribeInternal(subject: string, opts: SubscribeOptions): PushSubscription {
    validateSubject(subject, true);
    if (opts.queue !== undefined) validateName(opts.queue, 'queue');
    this.checkOpen('subscribe');
    const route: Route = {
      pattern: subject,
      queue: opts.queue,
      sub: new PushSubscription(subject, () => this.routes.delete(route), opts.signal),
    };
    this.routes.add(route);
    return route.sub;
  }

  request(subject: string, data: Uint8Array, opts?: RequestOptions): Promise<Uint8Array> {
    return new Promise<Uint8Array>((resolve, reject) => {
      validateSubject(subject, false);
      const { timeoutMs, signal } = compileRequestOptions(opts);
      this.checkOpen('request');
      if (signal?.aborted) throw canceled(signal, `request ${subject}`);
      let settled = false;
      const finish = () => {
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.pending.delete(pending);
      };
      const pending: Pending = {
        resolve: (d) => {
          if (settled) return;
          finish();
          resolve(d);
        },
        reject: (e) => {
          if (settled) return;
          finish();
          reject(e);
        },
      };
      const onAbort = () => pending.reject(canceled(signal!, `request ${subject}`));
      const timer = setTimeout(
        () => pending.reject(new KilnError('deadline_exceeded', `failed to request ${subject}: no reply within ${timeoutMs} ms`, { subject })),
        timeoutMs,
      );
      signal?.addEventListener('abort', onAbort, { once: true });
      this.pending.add(pending);
      const delivered = this.route(subject, data, {
        reply: async (d) => {
          this.checkOpen('reply');
          pending.resolve(copyBytes(d));
        },
        fail: (encoded) => pending.reject(decodeHandlerError(encoded)),
      });
      if (delivered === 0) {
        pending.reject(new UnavailableError(`failed to request ${subject}: no responders`, { subject }));
      }
    });
  }

  serve(subject: string, handler: RequestHandler, opts: ServeOptions = {}): Service {
    const sub = this.subscribeInternal(subject, { queue: opts.queue, signal: opts.signal });
    const service = new MemoryService(sub, handler, this.logger, () => this.services.delete(service));
    this.services.add(service);
    return service;
  }

  workQueue(name: string): WorkQueue {
    validateName(name, 'name');
    let state = this.queues.get(name);
    if (!state) {
      state = new MemoryWorkQueueState(name, this.closing.signal, this.logger);
      this.queues.set(name, state);
    }
    const queue = state;
    return {
      name,
      push: async (data) => {
        this.checkOpen(`push to work queue ${name}`);
        queue.push(data);
      },
      consume: async (handler, consumeOpts) => {
        this.checkOpen(`consume work queue ${name}`);
        await queue.consume(handler, consumeOpts);
      },
    };
  }

  /** Plain publish/subscribe: one process has no outage to bridge, so nothing is stored. */
  eventStream(name: string, subjects: readonly string[]): EventStream {
    validateEventStream(name, subjects);
    const kept = [...subjects];
    return {
      name,
      subjects: kept,
      ensure: async (limits) => {
        compileStreamLimits(limits);
        this.checkOpen(`set up event stream ${name}`);
      },
      publish: async (subject, data) => {
        checkStreamSubject(name, kept, subject);
        this.checkOpen(`publish on ${subject}`);
        this.route(subject, data);
      },
      consume: async (filter, handler, consumeOpts) => {
        validateName(consumeOpts.name, 'name');
        const sub = this.subscribeInternal(filter, { signal: consumeOpts.signal });
        consumeOpts.onReady?.();
        for await (const m of sub) {
          try {
            await handler({ subject: m.subject, data: m.data, seq: 0 });
          } catch (err) {
            this.logger.warn({ err, subject: m.subject, stream: name }, 'event stream handler failed');
          }
        }
      },
      flush: async () => true,
      settle: async () => true,
    };
  }

  async close(): Promise<void> {
    if (this.isClosed) return this.closedPromise;
    this.isClosed = true;
    this.closing.abort(new UnavailableError('bus closed'));
    await Promise.all([...this.queues.values()].map((q) => q.stopped()));
    await Promise.all([...this.services].map((s) => s.stop()));
    for (const r of this.routes) r.sub.end();
    this.routes.clear();
    for (const p of this.pending) p.reject(new UnavailableError('failed to request: bus closed'));
    this.resolveClosed();
  }

  closed(): Promise<void | Error> {
    return this.closedPromise;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Delivers to every plain route and one route per queue group; returns how many got it. */
  private route(subject: string, data: Uint8Array, reply?: Pick<Delivery, 'reply' | 'fail'>): number {
    const groups = new Map<string, Route[]>();
    let count = 0;
    for (const r of this.routes) {
      if (!subjectMatches(r.pattern, subject)) continue;
      if (r.queue === undefined) {
        r.sub.push({ subject, data: copyBytes(data), ...reply });
        count++;
      } else {
        const key = `${r.queue}\u0000${r.pattern}`;
        const members = groups.get(key);
        if (members) members.push(r);
        else groups.set(key, [r]);
      }
    }
    for (const [key, members] of groups) {
      const n = this.roundRobin.get(key) ?? 0;
      this.roundRobin.set(key, n + 1);
      const r = members[n % members.length] as Route;
      r.sub.push({ subject, data: copyBytes(data), ...reply });
      count++;
    }
    return count;
  }

  private checkOpen(what: string): void {
    if (this.isClosed) throw new UnavailableError(`failed to ${what}: bus closed`);
  }
}

class MemoryService implements Service {
  private readonly inflight = new Set<Promise<void>>();
  private readonly loop: Promise<void>;
  private stopping: Promise<void> | undefined;

  constructor(
    private readonly sub: PushSubscription,
    private readonly handler: RequestHandler,
    private readonly logger: Logger,
    private readonly onStop: () => void,
  ) {
    this.loop = this.run();
  }

  get subject(): string {
    return this.sub.subject;
  }

  private async run(): Promise<void> {
    for await (const m of this.sub as AsyncIterable<Delivery>) {
      if (!m.reply) continue; // a plain publish: nobody to answer
      const p = this.handle(m);
      this.inflight.add(p);
      void p.finally(() => this.inflight.delete(p));
    }
    void this.stop(); // ended by abort or bus close: release like stop()
  }

  private async handle(m: Delivery): Promise<void> {
    try {
      const out = await this.handler(m.data, m.subject);
      await m.reply?.(out);
    } catch (err) {
      this.logger.debug({ err, subject: m.subject }, 'request handler failed');
      m.fail?.(encodeHandlerError(err));
    }
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.sub.unsubscribe();
      await this.loop;
      await Promise.all([...this.inflight]);
      this.onStop();
    })();
    return this.stopping;
  }
}
