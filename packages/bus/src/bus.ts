/**
 * The one event-bus interface of Kiln. Tiers publish build events, announce
 * themselves, make request/reply calls and share durable work queues through
 * it. Two backends implement it: `createMemoryBus()` (one process, the
 * all-in-one daemon and unit tests) and `connectNatsBus()` (a cluster: core
 * NATS for pub/sub and request/reply, JetStream for work queues). Both pass
 * the contract suite in `@kiln/bus/testing`.
 *
 * Subjects are NATS-style: tokens of `[A-Za-z0-9_-]` (and other printable
 * characters except `.`, `*`, `>` and whitespace) separated by `.`, e.g.
 * `kiln.build.abc.vertex`. A subscription may use the wildcards `*` (exactly
 * one token) and `>` (one or more tokens, last token only); a published
 * subject never contains wildcards.
 */

/** A message received from a subscription. The receiver owns `data`. */
export interface Message {
  /** The concrete subject the message was published on (never a wildcard). */
  readonly subject: string;
  /** The payload. A fresh buffer per receiver: it may be kept or mutated. */
  readonly data: Uint8Array;
  /**
   * Present when the sender waits for an answer (the message came from
   * `request()`); absent for plain `publish()`. Sends `data` back to the
   * requester. Only the first reply to a request counts; later ones are
   * dropped. Rejects with a KilnError `unavailable` when the bus is closed.
   */
  readonly reply?: (data: Uint8Array) => Promise<void>;
}

export interface SubscribeOptions {
  /** Aborting it is the same as calling `unsubscribe()`. */
  signal?: AbortSignal;
  /**
   * Queue group: among the subscriptions sharing a group name on matching
   * subjects, each message goes to exactly one of them. Absent: every
   * subscription gets every message.
   */
  queue?: string;
}

/**
 * A live subscription, read as an async iterable (one reader at a time).
 * Messages are buffered without bound until read, so read promptly.
 */
export interface Subscription extends AsyncIterable<Message> {
  /** The subject (possibly with wildcards) this subscription listens on. */
  readonly subject: string;
  /**
   * Stops delivery. The iteration then ends (`done`) without yielding
   * messages still buffered. Idempotent. Leaving a `for await` loop early
   * (break, return, throw) unsubscribes too, as does closing the bus.
   */
  unsubscribe(): void;
}

export interface RequestOptions {
  /** How long to wait for the reply; default 5000. Exceeded: KilnError `deadline_exceeded`. */
  timeoutMs?: number;
  /** Aborting rejects the request with a CanceledError. */
  signal?: AbortSignal;
}

/**
 * Answers one request. Receives the request payload (owned by the handler)
 * and the concrete subject. A returned buffer is sent as the reply. A thrown
 * error is sent back and the requester rejects with a KilnError carrying the
 * same `code`, message and details (non-Kiln errors become `internal`).
 */
export type RequestHandler = (data: Uint8Array, subject: string) => Promise<Uint8Array>;

export interface ServeOptions {
  /** Aborting it is the same as calling `stop()`. */
  signal?: AbortSignal;
  /**
   * Queue group: among the services sharing a group on a subject only one
   * answers each request (load balancing). Absent: every service on the
   * subject gets each request and the requester keeps the first reply.
   */
  queue?: string;
}

/** A running request handler, from `EventBus.serve()`. */
export interface Service {
  readonly subject: string;
  /**
   * Stops taking requests and resolves once the handlers already running
   * have finished and sent their replies. Idempotent; never rejects.
   */
  stop(): Promise<void>;
}

/** Extra facts about a work item given to the handler. */
export interface WorkItemInfo {
  /** 1 on the first delivery, 2 on the first redelivery, and so on. */
  readonly attempt: number;
}

/**
 * Handles one work item; it owns `data`. Resolving acknowledges (removes) the
 * item; throwing hands it back to the queue for redelivery, possibly to
 * another consumer, after the consumer's `redeliveryDelayMs`.
 */
export type WorkHandler = (data: Uint8Array, info: WorkItemInfo) => Promise<void>;

export interface ConsumeOptions {
  /** Required: aborting it stops the consumer (see `WorkQueue.consume`). */
  signal: AbortSignal;
  /** Items handled at once by this consumer; default 1, at least 1. */
  concurrency?: number;
  /** Wait before an item whose handler threw is offered again; default 1000. */
  redeliveryDelayMs?: number;
}

/**
 * A named, durable work queue. Items are kept until a handler acknowledges
 * them; each item goes to one consumer at a time; delivery is at least once
 * (an item whose handler throws, or whose consumer dies, is delivered again).
 * Items have no ordering guarantee. Queues with the same name on the same
 * bus backend are the same queue.
 */
export interface WorkQueue {
  /** `[A-Za-z0-9_-]+`. */
  readonly name: string;
  /**
   * Adds an item. Resolves once the item is stored (for NATS: acknowledged by
   * JetStream), so it survives this process. The caller may reuse `data` as
   * soon as the call returns. Rejects with KilnError `unavailable` when the
   * bus is closed or the backend cannot store (e.g. JetStream disabled).
   */
  push(data: Uint8Array): Promise<void>;
  /**
   * Runs `handler` on items as they come, up to `concurrency` at once, until
   * `signal` aborts or the bus closes. Then it stops taking items, hands back
   * any item received but not yet started, waits for running handlers to
   * settle and resolves. Several consumers (in this process or others) may
   * run on one queue; each item goes to one of them. Rejects only when the
   * queue cannot be set up (KilnError `unavailable`).
   */
  consume(handler: WorkHandler, opts: ConsumeOptions): Promise<void>;
}

/** Retention of an event stream (JetStream: the stream's `max_age` and `max_bytes`; oldest dropped first). */
export interface EventStreamLimits {
  /** Events older than this are dropped; default 24 h. */
  maxAgeMs?: number;
  /** The stream keeps at most this many bytes; default 1 GiB. */
  maxBytes?: number;
}

/** One event read from an event stream. The receiver owns `data`. */
export interface StreamMessage {
  readonly subject: string;
  readonly data: Uint8Array;
  /** The stream's sequence number (NATS); increasing per stream, 0 on the memory bus. */
  readonly seq: number;
}

export interface StreamConsumeOptions {
  /** Required: aborting it stops the consumer; `consume()` then resolves. */
  signal: AbortSignal;
  /** Names this reader in logs and on the server (`[A-Za-z0-9_-]+`, e.g. the solver's id). */
  name: string;
  /** Called once the reader is in place: events stored from then on reach `handler`. */
  onReady?: () => void;
}

/**
 * A stored, ordered log of events on a set of subjects (on NATS a
 * JetStream stream). Publishers do not wait for the server: what they
 * publish while it is unreachable is kept (bounded) and stored, in order,
 * once it is back; a reader replays from the last event it saw after its
 * connection was broken. On the memory bus it is plain publish/subscribe
 * (one process has no outage to bridge).
 */
export interface EventStream {
  /** `[A-Za-z0-9_-]+`, e.g. `KILN_EVENTS`. */
  readonly name: string;
  /** The subjects (wildcards allowed) the stream stores. */
  readonly subjects: readonly string[];
  /**
   * Creates the stream if absent, or updates its limits. Needs the JetStream
   * API (the solver's NATS user). Rejects with KilnError `unavailable`
   * (JetStream disabled, server unreachable) or `permission_denied`.
   */
  ensure(limits?: EventStreamLimits): Promise<void>;
  /**
   * Stores `data` on `subject` (one of the stream's subjects). Resolves once
   * queued: the event is sent with an acknowledgement and resent until the
   * server has stored it. While NATS is down events are kept in order up to
   * a bound (16 MiB; beyond it the oldest are dropped, with a warning).
   * Rejects with InvalidArgumentError on a subject outside the stream and
   * KilnError `unavailable` once the bus is closed.
   */
  publish(subject: string, data: Uint8Array): Promise<void>;
  /**
   * Calls `handler` on every event on `filter` (wildcards allowed) stored
   * after this call, in stream order, one at a time, until `signal` aborts
   * or the bus closes. A broken connection is retried forever; reading
   * resumes after the last event handled, so nothing stored meanwhile is
   * missed or repeated. Events stored before the reader is in place
   * (`onReady`) are not delivered. A handler that throws is logged; the
   * event counts as handled.
   */
  consume(filter: string, handler: (m: StreamMessage) => void | Promise<void>, opts: StreamConsumeOptions): Promise<void>;
  /** Resolves once everything published so far is stored (or dropped), or after `timeoutMs`; true when nothing is left. */
  flush(timeoutMs: number): Promise<boolean>;
  /**
   * Waits, up to `timeoutMs`, until this process's readers are likely to
   * have everything other publishers sent: at once when the connection has
   * been up for a while; after a broken connection, until it is back, other
   * clients have had time to reconnect and store what they kept, and every
   * reader has handled all that is stored. True when settled, false on
   * timeout. The memory bus is always settled.
   */
  settle(timeoutMs: number): Promise<boolean>;
}

export interface EventBus extends AsyncDisposable {
  /**
   * Publishes `data` to every subscription matching `subject` (no
   * wildcards). At most once: resolves when the message is handed to the
   * backend, not when anyone has received it; with no subscriber it is
   * dropped. Messages from one publisher arrive in publish order. The caller
   * may reuse `data` once the call returns. Rejects with InvalidArgumentError
   * (field `subject`) on a bad subject and KilnError `unavailable` once closed.
   */
  publish(subject: string, data: Uint8Array): Promise<void>;
  /**
   * Subscribes to `subject` (wildcards allowed). Every message published
   * after this returns (on a networked bus: once the server has seen the
   * subscription, which a publish through the same bus always follows) is
   * delivered. Throws InvalidArgumentError on a bad subject and KilnError
   * `unavailable` once closed.
   */
  subscribe(subject: string, opts?: SubscribeOptions): Subscription;
  /**
   * Sends `data` to one subject and waits for the first reply.
   * Rejects with: KilnError `unavailable` at once when nobody listens on the
   * subject ("no responders") or the bus is closed; `deadline_exceeded` after
   * `timeoutMs`; CanceledError when `signal` aborts; or the KilnError thrown
   * by the remote handler.
   */
  request(subject: string, data: Uint8Array, opts?: RequestOptions): Promise<Uint8Array>;
  /**
   * Answers requests on `subject` (wildcards allowed) with `handler` until
   * `stop()`, `signal` aborts or the bus closes. Requests are handled
   * concurrently, each as it arrives. Throws like `subscribe()`.
   */
  serve(subject: string, handler: RequestHandler, opts?: ServeOptions): Service;
  /** The durable work queue `name` (cheap; no I/O until used). Throws InvalidArgumentError on a bad name. */
  workQueue(name: string): WorkQueue;
  /** The event stream `name` storing `subjects` (cheap; no I/O until used). Throws InvalidArgumentError on a bad name or subject. */
  eventStream(name: string, subjects: readonly string[]): EventStream;
  /**
   * Stops consumers and services, ends subscriptions, flushes what was
   * published and releases the connection. Idempotent; never rejects.
   */
  close(): Promise<void>;
  /**
   * Resolves once the bus is closed: with nothing after `close()`, with the
   * Error that closed it otherwise (e.g. the NATS connection was lost for
   * good). Never rejects.
   */
  closed(): Promise<void | Error>;
  /** Same as `close()`, for `await using`. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** Defaults shared by the backends. */
export const busDefaults = {
  requestTimeoutMs: 5000,
  concurrency: 1,
  redeliveryDelayMs: 1000,
  eventStreamMaxAgeMs: 24 * 3_600_000,
  eventStreamMaxBytes: 1024 ** 3,
} as const;
