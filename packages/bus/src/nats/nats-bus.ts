import { InvalidArgumentError, silentLogger, UnavailableError, type Logger } from '@kiln/common';
import { connect, headers, type JetStreamManager, type Msg, type MsgHdrs, type NatsConnection, type Subscription as NatsSubscription } from 'nats';
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
import { canceled, whenAborted } from '../internal/abort.js';
import { compileRequestOptions } from '../internal/options.js';
import { PushSubscription } from '../internal/push-subscription.js';
import { decodeHandlerError, encodeHandlerError, ERROR_HEADER } from '../internal/reply.js';
import { validateName, validateSubject } from '../subject.js';
import { compileNatsAuth, natsConnectAuthOptions, redactCredentials, type NatsAuth, type NatsTlsOptions } from './nats-auth.js';
import { fromNatsError } from './nats-errors.js';
import { NatsWorkQueue, type NatsWorkQueueContext } from './nats-work-queue.js';
import { NatsEventStream, STREAM_OUTBOX_MAX_BYTES, type NatsEventStreamContext } from './nats-event-stream.js';
import { copyBytes } from '../internal/bytes.js';

export interface NatsBusOptions {
  /** One URL (`nats://127.0.0.1:4222`) or several of the same cluster. */
  servers: string | string[];
  /** Connection name shown by the server's monitoring; default "kiln". */
  name?: string;
  /** Child logger; the bus binds `component: "nats-bus"`. Default silent. */
  logger?: Logger;
  /** How long the first connect may take; default 5000. */
  connectTimeoutMs?: number;
  /** Credentials for a server that requires them; default none. Never logged. */
  auth?: NatsAuth;
  /** TLS towards the server (CA to trust, client certificate); default plain unless the server requires TLS. */
  tls?: NatsTlsOptions;
  /**
   * Prefix of this connection's reply subjects (JetStream acknowledgements,
   * requests), so server permissions can give each user its own inboxes
   * (deploy/nats: `_INBOX.<role>.>`); default `_INBOX`.
   */
  inboxPrefix?: string;
  /** Most bytes of build events an event stream keeps while NATS is unreachable (oldest dropped beyond it, with a warning); default 16 MiB. */
  eventOutboxMaxBytes?: number;
}

interface CompiledNatsBusOptions {
  servers: string[];
  name: string;
  logger: Logger;
  connectTimeoutMs: number;
  auth: NatsAuth | undefined;
  tls: NatsTlsOptions | undefined;
  inboxPrefix: string | undefined;
  eventOutboxMaxBytes: number;
  /** Strings redacted from every error and log line. */
  secrets: string[];
}

export function compileNatsBusOptions(opts: NatsBusOptions): CompiledNatsBusOptions {
  const servers = typeof opts?.servers === 'string' ? [opts.servers] : opts?.servers;
  if (!Array.isArray(servers) || servers.length === 0 || servers.some((s) => typeof s !== 'string' || s.trim() === '')) {
    throw new InvalidArgumentError('invalid servers: give at least one NATS URL', 'servers');
  }
  const connectTimeoutMs = opts.connectTimeoutMs ?? 5000;
  if (!Number.isFinite(connectTimeoutMs) || connectTimeoutMs <= 0) {
    throw new InvalidArgumentError(`invalid connectTimeoutMs ${connectTimeoutMs}`, 'connectTimeoutMs');
  }
  const { auth, secrets } = compileNatsAuth(opts.auth);
  if (opts.tls !== undefined && (typeof opts.tls !== 'object' || opts.tls === null || Boolean(opts.tls.cert) !== Boolean(opts.tls.key))) {
    throw new InvalidArgumentError('invalid tls: a client certificate needs both cert and key', 'tls');
  }
  return {
    servers,
    name: opts.name ?? 'kiln',
    logger: (opts.logger ?? silentLogger()).child({ component: 'nats-bus' }),
    connectTimeoutMs,
    auth,
    tls: opts.tls,
    inboxPrefix: compileInboxPrefix(opts.inboxPrefix),
    eventOutboxMaxBytes: compileOutboxMaxBytes(opts.eventOutboxMaxBytes),
    secrets,
  };
}

function compileOutboxMaxBytes(n: number | undefined): number {
  if (n === undefined) return STREAM_OUTBOX_MAX_BYTES;
  if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`invalid eventOutboxMaxBytes ${n}`, 'eventOutboxMaxBytes');
  return n;
}

function compileInboxPrefix(prefix: string | undefined): string | undefined {
  if (prefix === undefined) return undefined;
  if (typeof prefix !== 'string' || !/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/.test(prefix)) {
    throw new InvalidArgumentError(`invalid inboxPrefix "${String(prefix)}": subject tokens without wildcards`, 'inboxPrefix');
  }
  return prefix;
}

/**
 * Connects an EventBus to NATS: core NATS for publish/subscribe and
 * request/reply, JetStream (which the server must enable, `-js`) for work
 * queues. After the first connection it reconnects forever; publishes made
 * while disconnected are kept (up to 16 MiB) and sent in order once it is back. Rejects with KilnError
 * `unavailable` when the first connection fails.
 */
export async function connectNatsBus(opts: NatsBusOptions): Promise<EventBus> {
  const o = compileNatsBusOptions(opts);
  let nc: NatsConnection;
  try {
    nc = await connect({
      servers: o.servers,
      name: o.name,
      timeout: o.connectTimeoutMs,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 1000,
      ...(o.inboxPrefix ? { inboxPrefix: o.inboxPrefix } : {}),
      ...natsConnectAuthOptions(o.auth, o.tls),
    });
  } catch (err) {
    // The cause is dropped: nats.js errors may carry the connect options.
    const servers = redactCredentials(o.servers.join(','));
    const reason = redactCredentials(err instanceof Error ? err.message : String(err), o.secrets);
    throw new UnavailableError(`failed to connect to NATS at ${servers}: ${reason}${authHint(reason, o)}`, { servers });
  }
  return new NatsBusImpl(nc, o.logger, o.secrets, o.eventOutboxMaxBytes);
}

/** A hint after an authorization failure: which kind of credentials were sent. */
function authHint(reason: string, o: CompiledNatsBusOptions): string {
  if (!/authorization|authentication/i.test(reason)) return '';
  if (!o.auth) return ' (the server requires credentials: give a user and password, a token, an NKEY seed or a credentials file)';
  const kind = 'user' in o.auth ? `user "${o.auth.user}" and its password` : 'token' in o.auth ? 'a token' : 'nkeySeed' in o.auth ? 'an NKEY seed' : 'a credentials file';
  return ` (the server refused ${kind})`;
}

/** Most bytes of publishes kept while NATS is down (see NatsBusImpl.outbox). */
const OUTBOX_MAX_BYTES = 16 * 1024 * 1024;
/**
 * How long after a reconnect the kept publishes wait: every Kiln process
 * retries the server once a second, so by then their subscriptions are
 * back and the messages reach them (core NATS stores nothing).
 */
const OUTBOX_FLUSH_DELAY_MS = 2500;
/** How long close() waits for event streams' outboxes while connected. */
const STREAM_FLUSH_ON_CLOSE_MS = 2000;

class NatsBusImpl implements EventBus, NatsWorkQueueContext, NatsEventStreamContext {
  private readonly subs = new Set<PushSubscription>();
  private readonly services = new Set<NatsService>();
  private readonly consumers = new Set<Promise<void>>();
  private readonly queues = new Map<string, NatsWorkQueue>();
  private readonly streams = new Map<string, NatsEventStream>();
  private connected = true;
  private epoch = 0;
  /** When the connection last came back (0: never broken). */
  private reconnectedAt = 0;
  private readonly reconnectWaiters = new Set<() => void>();
  readonly closing = new AbortController();
  private closingPromise: Promise<void> | undefined;
  private readonly closedPromise: Promise<void | Error>;
  private jsmPromise: Promise<JetStreamManager> | undefined;
  /**
   * Publishes made while the connection is down. nats.js empties its own
   * buffer at every reconnect attempt, so they are kept here and sent, in
   * order, once it is back (an outage loses only what was in flight when it
   * began). Bounded by OUTBOX_MAX_BYTES: the oldest are dropped first.
   */
  private readonly outbox: { subject: string; data: Uint8Array }[] = [];
  private outboxBytes = 0;
  private outboxDropped = 0;
  private down = false;
  private flushTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly nc: NatsConnection,
    readonly logger: Logger,
    private readonly secrets: readonly string[],
    readonly eventOutboxMaxBytes: number,
  ) {
    this.closedPromise = nc.closed().then((err) => {
      clearTimeout(this.flushTimer);
      this.closing.abort(new UnavailableError('NATS connection closed'));
      for (const s of this.subs) s.end();
      this.subs.clear();
      if (err) {
        const message = redactCredentials(err.message, this.secrets);
        this.logger.error({ error: message, code: (err as { code?: string }).code }, 'NATS connection closed with an error');
        return new UnavailableError(`NATS connection closed: ${message}`);
      }
      return undefined;
    });
    void this.watchStatus();
  }

  private async watchStatus(): Promise<void> {
    for await (const s of this.nc.status()) {
      // `data` is a server address or an error (e.g. a permissions violation); either may name credentials.
      const data = redactCredentials(typeof s.data === 'string' ? s.data : JSON.stringify(s.data ?? ''), this.secrets);
      if (s.permissionContext) this.logger.warn({ status: s.type, data, ...s.permissionContext }, 'NATS refused an operation (subject permissions)');
      else if (s.type === 'disconnect' || s.type === 'error') this.logger.warn({ status: s.type, data }, 'NATS connection status');
      else if (s.type === 'reconnect') this.logger.info({ status: s.type, data, queued: this.outbox.length }, 'NATS reconnected');
      if (s.type === 'disconnect') {
        this.connected = false;
        this.down = true;
        clearTimeout(this.flushTimer);
      } else if (s.type === 'reconnect') {
        this.connected = true;
        this.epoch++;
        this.reconnectedAt = Date.now();
        for (const w of [...this.reconnectWaiters]) w();
        // Core NATS keeps nothing: wait until the other clients (reconnecting every second) have subscribed again.
        clearTimeout(this.flushTimer);
        this.flushTimer = setTimeout(() => this.flushOutbox(), OUTBOX_FLUSH_DELAY_MS);
      }
      else this.logger.debug({ status: s.type, data }, 'NATS connection status');
    }
  }

  async publish(subject: string, data: Uint8Array): Promise<void> {
    validateSubject(subject, false);
    this.checkOpen('publish');
    if (this.down || this.outbox.length > 0) return this.queue(subject, copyBytes(data));
    try {
      this.nc.publish(subject, copyBytes(data));
    } catch (err) {
      throw fromNatsError(err, `publish ${subject}`, { subject });
    }
  }

  private queue(subject: string, data: Uint8Array): void {
    this.outbox.push({ subject, data });
    this.outboxBytes += data.length;
    while (this.outboxBytes > OUTBOX_MAX_BYTES && this.outbox.length > 1) {
      this.outboxBytes -= this.outbox.shift()!.data.length;
      if (this.outboxDropped++ === 0) this.logger.warn({ maxBytes: OUTBOX_MAX_BYTES }, 'NATS down: publishes beyond the outbox limit are dropped, oldest first');
    }
  }

  /** Sends what was published during an outage, in order. */
  private flushOutbox(): void {
    this.down = false;
    const pending = this.outbox.splice(0);
    this.outboxBytes = 0;
    if (this.outboxDropped > 0) this.logger.warn({ dropped: this.outboxDropped }, 'NATS back: publishes dropped during the outage');
    this.outboxDropped = 0;
    for (const m of pending) {
      try {
        this.nc.publish(m.subject, m.data);
      } catch (err) {
        this.logger.warn({ err: redactCredentials((err as Error).message, this.secrets), subject: m.subject }, 'failed to send a publish queued during a NATS outage');
      }
    }
  }

  subscribe(subject: string, opts: SubscribeOptions = {}): Subscription {
    validateSubject(subject, true);
    if (opts.queue !== undefined) validateName(opts.queue, 'queue');
    this.checkOpen('subscribe');
    let natsSub: NatsSubscription | undefined;
    const sub = new PushSubscription(
      subject,
      () => {
        this.subs.delete(sub);
        if (natsSub && !natsSub.isClosed()) natsSub.unsubscribe();
      },
      opts.signal,
    );
    try {
      natsSub = this.nc.subscribe(subject, {
        queue: opts.queue,
        callback: (err, msg) => {
          if (err) {
            this.logger.warn({ err, subject }, 'subscription failed');
            sub.unsubscribe();
            return;
          }
          sub.push(this.toMessage(msg));
        },
      });
    } catch (err) {
      sub.end();
      throw fromNatsError(err, `subscribe to ${subject}`, { subject });
    }
    this.subs.add(sub);
    return sub;
  }

  private toMessage(msg: Msg): Message {
    const replyTo = msg.reply;
    const m: { subject: string; data: Uint8Array; reply?: (d: Uint8Array) => Promise<void> } = {
      subject: msg.subject,
      data: copyBytes(msg.data),
    };
    if (replyTo) {
      m.reply = async (d) => {
        this.checkOpen('reply');
        try {
          this.nc.publish(replyTo, copyBytes(d));
        } catch (err) {
          throw fromNatsError(err, `reply on ${msg.subject}`, { subject: msg.subject });
        }
      };
    }
    return m;
  }

  async request(subject: string, data: Uint8Array, opts?: RequestOptions): Promise<Uint8Array> {
    validateSubject(subject, false);
    const { timeoutMs, signal } = compileRequestOptions(opts);
    this.checkOpen('request');
    const what = `request ${subject}`;
    if (signal?.aborted) throw canceled(signal, what);
    const req = this.nc.request(subject, copyBytes(data), { timeout: timeoutMs });
    req.catch(() => {}); // may lose the race against abort
    const abort = whenAborted(signal);
    let msg: Msg;
    try {
      msg = await Promise.race([
        req,
        abort.promise.then(() => {
          throw canceled(signal!, what);
        }),
      ]);
    } catch (err) {
      const e = fromNatsError(err, what, { subject });
      if (e.code === 'deadline_exceeded') e.message = `failed to ${what}: no reply within ${timeoutMs} ms`;
      throw e;
    } finally {
      abort.dispose();
    }
    const encoded = msg.headers?.get(ERROR_HEADER);
    if (encoded) throw decodeHandlerError(encoded);
    return copyBytes(msg.data);
  }

  serve(subject: string, handler: RequestHandler, opts: ServeOptions = {}): Service {
    validateSubject(subject, true);
    if (opts.queue !== undefined) validateName(opts.queue, 'queue');
    this.checkOpen('serve');
    const service = new NatsService(this.nc, subject, handler, opts, this.logger, () => this.services.delete(service));
    this.services.add(service);
    return service;
  }

  workQueue(name: string): WorkQueue {
    validateName(name, 'name');
    let q = this.queues.get(name);
    if (!q) {
      q = new NatsWorkQueue(name, this);
      this.queues.set(name, q);
    }
    return q;
  }

  eventStream(name: string, subjects: readonly string[]): EventStream {
    let st = this.streams.get(name);
    if (!st) {
      st = new NatsEventStream(name, subjects, this);
      this.streams.set(name, st);
    } else if (st.subjects.length !== subjects.length || subjects.some((x) => !st!.subjects.includes(x))) {
      throw new InvalidArgumentError(`event stream ${name} is already open with subjects ${st.subjects.join(', ')}`, 'subjects');
    }
    return st;
  }

  // NatsEventStreamContext
  isConnected(): boolean {
    return this.connected && !this.nc.isClosed();
  }

  whenConnected(): Promise<void> {
    if (this.isConnected() || this.closing.signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.reconnectWaiters.delete(done);
        this.closing.signal.removeEventListener('abort', done);
        resolve();
      };
      this.reconnectWaiters.add(done);
      this.closing.signal.addEventListener('abort', done, { once: true });
    });
  }

  connectionEpoch(): number {
    return this.epoch;
  }

  lastReconnectAt(): number {
    return this.reconnectedAt;
  }

  // NatsWorkQueueContext
  jetstreamManager(): Promise<JetStreamManager> {
    this.jsmPromise ??= this.nc.jetstreamManager().catch((err: unknown) => {
      this.jsmPromise = undefined;
      throw err;
    });
    return this.jsmPromise;
  }

  trackConsumer(run: Promise<void>): void {
    this.consumers.add(run);
    void run.catch(() => {}).finally(() => this.consumers.delete(run));
  }

  checkOpen(what: string): void {
    if (this.closing.signal.aborted || this.nc.isClosed()) throw new UnavailableError(`failed to ${what}: bus closed`);
  }

  close(): Promise<void> {
    this.closingPromise ??= (async () => {
      // Build events still in an outbox get a moment to be stored while the connection is up.
      if (this.isConnected()) await Promise.allSettled([...this.streams.values()].map((st) => st.flush(STREAM_FLUSH_ON_CLOSE_MS)));
      this.closing.abort(new UnavailableError('bus closed'));
      // Consumers hand back unstarted items and wait for their handlers
      // (acks need the connection), services answer what they took.
      await Promise.allSettled([...this.consumers]);
      await Promise.allSettled([...this.services].map((s) => s.stop()));
      for (const s of this.subs) s.end();
      this.subs.clear();
      if (!this.nc.isClosed()) {
        try {
          await this.nc.drain();
        } catch (err) {
          this.logger.debug({ err }, 'drain failed; closing');
          await this.nc.close().catch(() => {});
        }
      }
      await this.closedPromise;
    })();
    return this.closingPromise;
  }

  async closed(): Promise<void | Error> {
    const result = await this.closedPromise;
    // An explicit close() is a clean end even if the connection was lost.
    return this.closingPromise ? undefined : result;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

class NatsService implements Service {
  private readonly sub: NatsSubscription;
  private readonly inflight = new Set<Promise<void>>();
  private stopping: Promise<void> | undefined;
  private readonly onAbort = () => void this.stop();

  constructor(
    private readonly nc: NatsConnection,
    readonly subject: string,
    private readonly handler: RequestHandler,
    private readonly opts: ServeOptions,
    private readonly logger: Logger,
    private readonly onStop: () => void,
  ) {
    try {
      this.sub = nc.subscribe(subject, {
        queue: opts.queue,
        callback: (err, msg) => {
          if (err) {
            this.logger.warn({ err, subject }, 'service subscription failed');
            void this.stop();
            return;
          }
          if (!msg.reply) return; // a plain publish: nobody to answer
          const p = this.handle(msg);
          this.inflight.add(p);
          void p.finally(() => this.inflight.delete(p));
        },
      });
    } catch (err) {
      throw fromNatsError(err, `serve ${subject}`, { subject });
    }
    if (opts.signal?.aborted) queueMicrotask(this.onAbort);
    else opts.signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  private async handle(msg: Msg): Promise<void> {
    let reply: Uint8Array;
    let h: MsgHdrs | undefined;
    try {
      reply = copyBytes(await this.handler(copyBytes(msg.data), msg.subject));
    } catch (err) {
      this.logger.debug({ err, subject: msg.subject }, 'request handler failed');
      reply = new Uint8Array(0);
      h = headers();
      h.set(ERROR_HEADER, encodeHandlerError(err));
    }
    try {
      msg.respond(reply, h ? { headers: h } : undefined);
    } catch (err) {
      this.logger.warn({ err, subject: msg.subject }, 'failed to send a reply');
    }
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.opts.signal?.removeEventListener('abort', this.onAbort);
      if (!this.sub.isClosed() && !this.nc.isClosed()) {
        try {
          await this.sub.drain();
        } catch {
          // the connection went away; nothing left to drain
        }
      }
      await Promise.allSettled([...this.inflight]);
      this.onStop();
    })();
    return this.stopping;
  }
}
