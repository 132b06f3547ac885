import type { MessageInitShape } from '@bufbuild/protobuf';
import { timestampNow } from '@bufbuild/protobuf/wkt';
import { events, type llb } from '@kiln/api';
import { InvalidArgumentError, silentLogger, UnavailableError, type Logger } from '@kiln/common';
import type { EventBus, Subscription } from './bus.js';
import { canceled } from './internal/abort.js';
import { publishEvent, subscribeEvents, type EventSubscription } from './events.js';
import { validateName } from './subject.js';

/** Announcements of tier T go to `kiln.services.<T>`. */
export const servicesSubject = (tier: string): string => `kiln.services.${tier}`;
/**
 * A new directory publishes (empty) here; every announcer answers by
 * announcing at once, so a fresh directory fills up without waiting an interval.
 */
export const directoryProbeSubject = 'kiln.directory.probe';

export type ServiceAnnouncement = events.ServiceAnnouncement;

/** What a tier process announces about itself. */
export interface ServiceInfo {
  /** Tier name, `[A-Za-z0-9_-]+` (e.g. "worker", "content-store"). */
  tier: string;
  /** Unique within the tier (e.g. host name plus pid). */
  id: string;
  /** Connect base URL of the process. */
  url: string;
  platforms?: MessageInitShape<typeof llb.PlatformSchema>[];
  labels?: Record<string, string>;
  /** Workers: the op kinds they run (ServiceAnnouncement.ops). */
  ops?: string[];
}

export interface ServiceDirectoryOptions {
  /**
   * Announce interval of the cluster, default 2000. Announcements republish
   * every interval; an entry not seen for 3 intervals is dropped. Use one
   * value for all processes of a cluster.
   */
  intervalMs?: number;
  logger?: Logger;
  /**
   * Checks an announcement before it is believed (e.g. the endpoint proves
   * the tier's role over mTLS). Until it resolves ok the entry is absent;
   * a failure is logged and the entry stays absent (rechecked after
   * `VERIFY_RETRY_MS` if it keeps announcing). Checked once per id and url.
   */
  verify?: (a: ServiceAnnouncement) => Promise<{ ok: true } | { ok: false; reason: string }>;
}

/** A refused announcement is checked again after this long (its endpoint may have been fixed). */
export const VERIFY_RETRY_MS = 30_000;

export interface AnnounceOptions {
  /** Republish interval; default the directory's `intervalMs`. */
  intervalMs?: number;
  /** Aborting it is the same as `Announcement.stop()`. */
  signal?: AbortSignal;
}

export interface WaitForOptions {
  /** Default 30000. Exceeded: KilnError `unavailable` naming the tier. */
  timeoutMs?: number;
  /** Aborting rejects with CanceledError. */
  signal?: AbortSignal;
}

/** A running announcement from `ServiceDirectory.announce()`. */
export interface Announcement extends AsyncDisposable {
  readonly tier: string;
  readonly id: string;
  /**
   * Stops republishing and publishes the entry once more with `leaving: true`
   * so directories drop it at once. Idempotent; never rejects.
   */
  stop(): Promise<void>;
}

/**
 * Finds tier processes without static configuration: each process announces
 * itself on `kiln.services.<tier>` (protobuf `kiln.events.v1.ServiceAnnouncement`)
 * and every directory keeps the live entries. Works over any EventBus.
 */
export interface ServiceDirectory extends AsyncDisposable {
  /**
   * Publishes `service` now and then every `intervalMs` (and whenever a new
   * directory asks) until stopped, the signal aborts or the directory closes.
   * Resolves after the first publish; rejects with InvalidArgumentError on a
   * bad tier, id or url, or the bus's publish error.
   */
  announce(service: ServiceInfo, opts?: AnnounceOptions): Promise<Announcement>;
  /**
   * The live entries of `tier`, sorted by id; empty when none. Entries not
   * seen for 3 intervals, and those that announced `leaving`, are absent.
   * The caller owns the returned array (not the messages; do not mutate them).
   */
  list(tier: string): ServiceAnnouncement[];
  /**
   * Resolves with the first live entry of `tier` (by id) as soon as there is
   * one. Rejects with KilnError `unavailable` (details.tier) after `timeoutMs`,
   * CanceledError on abort, `unavailable` when the directory closes.
   */
  waitFor(tier: string, opts?: WaitForOptions): Promise<ServiceAnnouncement>;
  /** Stops this directory's announcements (publishing `leaving`) and its subscription. Idempotent. */
  close(): Promise<void>;
}

/** Creates a directory over `bus`; it starts listening at once. The caller keeps owning `bus`. */
export function createServiceDirectory(bus: EventBus, opts: ServiceDirectoryOptions = {}): ServiceDirectory {
  const intervalMs = compileInterval(opts.intervalMs ?? 2000, 'intervalMs');
  return new ServiceDirectoryImpl(bus, intervalMs, (opts.logger ?? silentLogger()).child({ component: 'service-directory' }), opts.verify);
}

function compileInterval(ms: number, field: string): number {
  if (!Number.isFinite(ms) || ms <= 0) throw new InvalidArgumentError(`invalid ${field} ${ms}: must be a positive number`, field);
  return ms;
}

interface Entry {
  announcement: ServiceAnnouncement;
  seenAt: number;
}

interface Waiter {
  tier: string;
  wake(a: ServiceAnnouncement): void;
  fail(err: Error): void;
}

class ServiceDirectoryImpl implements ServiceDirectory {
  private readonly tiers = new Map<string, Map<string, Entry>>();
  private readonly waiters = new Set<Waiter>();
  private readonly announcements = new Set<AnnouncementImpl>();
  private readonly sub: EventSubscription<ServiceAnnouncement>;
  private readonly watching: Promise<void>;
  private closing: Promise<void> | undefined;
  /** Verdicts of `verify` by `tier/id/url`: true, or the time a refusal was logged; a promise while checking. */
  private readonly verdicts = new Map<string, true | number | Promise<void>>();
  /** When the last announcement (of any service) was applied. */
  private lastHeardAt = Date.now();

  constructor(
    private readonly bus: EventBus,
    private readonly intervalMs: number,
    private readonly logger: Logger,
    private readonly verify?: ServiceDirectoryOptions['verify'],
  ) {
    this.sub = subscribeEvents(bus, servicesSubject('*'), events.ServiceAnnouncementSchema, {
      onDecodeError: (err, subject) => logger.warn({ err, subject }, 'dropped a malformed service announcement'),
    });
    this.watching = this.watch();
    void bus.closed().then(() => this.close()); // announcements cannot outlive their bus
    bus.publish(directoryProbeSubject, new Uint8Array(0)).catch((err: unknown) => logger.warn({ err }, 'failed to probe for services'));
  }

  private async watch(): Promise<void> {
    for await (const { message } of this.sub) this.apply(message);
  }

  private apply(a: ServiceAnnouncement): void {
    if (!a.tier || !a.id) return;
    if (this.verify && !a.leaving) {
      const key = `${a.tier}/${a.id}/${a.url}`;
      const verdict = this.verdicts.get(key);
      if (verdict !== true) {
        if (verdict === undefined || (typeof verdict === 'number' && Date.now() - verdict > VERIFY_RETRY_MS)) this.check(key, a);
        return;
      }
    }
    let entries = this.tiers.get(a.tier);
    if (a.leaving) {
      // With verification, only a leave for the url that was verified counts.
      if (!this.verify || entries?.get(a.id)?.announcement.url === a.url) entries?.delete(a.id);
      return;
    }
    if (!entries) {
      entries = new Map();
      this.tiers.set(a.tier, entries);
    }
    const now = Date.now();
    // A silence longer than one interval (the bus was down) does not count
    // towards anyone's age: otherwise the first announcement heard after an
    // outage would expire every process that has not re-announced yet.
    const silence = now - this.lastHeardAt - this.intervalMs;
    if (silence > 0) for (const tier of this.tiers.values()) for (const e of tier.values()) e.seenAt += silence;
    this.lastHeardAt = now;
    entries.set(a.id, { announcement: a, seenAt: now });
    for (const w of this.waiters) if (w.tier === a.tier) w.wake(this.list(a.tier)[0] ?? a);
  }

  /** Runs `verify` once for `key`; a pass applies the announcement, a refusal is logged. */
  private check(key: string, a: ServiceAnnouncement): void {
    const checking = this.verify!(a)
      .catch((err: unknown) => ({ ok: false as const, reason: (err as Error).message }))
      .then((r) => {
        if (this.closing) return;
        if (r.ok) {
          this.verdicts.set(key, true);
          this.apply(a);
        } else {
          this.verdicts.set(key, Date.now());
          this.logger.warn({ tier: a.tier, id: a.id, url: a.url, reason: r.reason }, 'ignored a service announcement: its endpoint did not prove the tier role');
        }
      });
    this.verdicts.set(key, checking);
  }

  list(tier: string): ServiceAnnouncement[] {
    const entries = this.tiers.get(tier);
    if (!entries) return [];
    // Entries age against the newest announcement heard from anyone, not the
    // clock: while the bus is down (nobody is heard, this process included)
    // the directory keeps what it knew, so a NATS outage does not empty it;
    // a process that stops announcing while others go on still expires.
    const now = Math.min(Date.now(), this.lastHeardAt + this.intervalMs);
    const cutoff = now - 3 * this.intervalMs;
    for (const [id, e] of entries) if (e.seenAt < cutoff) entries.delete(id);
    return [...entries.values()].map((e) => e.announcement).sort((x, y) => (x.id < y.id ? -1 : x.id > y.id ? 1 : 0));
  }

  waitFor(tier: string, opts: WaitForOptions = {}): Promise<ServiceAnnouncement> {
    return new Promise((resolve, reject) => {
      const timeoutMs = compileInterval(opts.timeoutMs ?? 30_000, 'timeoutMs');
      const { signal } = opts;
      const what = `find a "${tier}" service`;
      if (this.closing) throw new UnavailableError(`failed to ${what}: directory closed`, { tier });
      if (signal?.aborted) throw canceled(signal, what);
      const first = this.list(tier)[0];
      if (first) return resolve(first);
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.waiters.delete(waiter);
      };
      const waiter: Waiter = {
        tier,
        wake: (a) => {
          done();
          resolve(a);
        },
        fail: (err) => {
          done();
          reject(err);
        },
      };
      const onAbort = () => waiter.fail(canceled(signal!, what));
      const timer = setTimeout(
        () => waiter.fail(new UnavailableError(`failed to ${what}: none announced within ${timeoutMs} ms`, { tier })),
        timeoutMs,
      );
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.add(waiter);
    });
  }

  async announce(service: ServiceInfo, opts: AnnounceOptions = {}): Promise<Announcement> {
    validateName(service?.tier, 'tier');
    for (const field of ['id', 'url'] as const) {
      if (typeof service[field] !== 'string' || service[field] === '') {
        throw new InvalidArgumentError(`invalid ${field}: must be a non-empty string`, field);
      }
    }
    if (this.closing) throw new UnavailableError('failed to announce: directory closed', { tier: service.tier });
    const intervalMs = compileInterval(opts.intervalMs ?? this.intervalMs, 'intervalMs');
    const a = new AnnouncementImpl(this.bus, service, intervalMs, this.logger, () => this.announcements.delete(a));
    this.announcements.add(a);
    try {
      await a.start(opts.signal);
    } catch (err) {
      await a.stop();
      throw err;
    }
    return a;
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      await Promise.all([...this.announcements].map((a) => a.stop()));
      this.sub.unsubscribe();
      await this.watching.catch(() => {});
      for (const w of this.waiters) w.fail(new UnavailableError(`failed to find a "${w.tier}" service: directory closed`, { tier: w.tier }));
    })();
    return this.closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

class AnnouncementImpl implements Announcement {
  private timer: NodeJS.Timeout | undefined;
  private probes: Subscription | undefined;
  private stopping: Promise<void> | undefined;
  private signal: AbortSignal | undefined;
  private readonly onAbort = () => void this.stop();

  constructor(
    private readonly bus: EventBus,
    private readonly service: ServiceInfo,
    private readonly intervalMs: number,
    private readonly logger: Logger,
    private readonly onStop: () => void,
  ) {}

  get tier(): string {
    return this.service.tier;
  }

  get id(): string {
    return this.service.id;
  }

  async start(signal: AbortSignal | undefined): Promise<void> {
    this.signal = signal;
    this.probes = this.bus.subscribe(directoryProbeSubject);
    void this.answerProbes(this.probes);
    await this.publish(false);
    if (this.stopping) return;
    this.timer = setInterval(() => this.republish(), this.intervalMs);
    if (signal?.aborted) void this.stop();
    else signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  private async answerProbes(probes: Subscription): Promise<void> {
    for await (const _ of probes) this.republish();
  }

  private republish(): void {
    if (this.stopping) return;
    this.publish(false).catch((err: unknown) => this.logger.warn({ err, tier: this.tier, id: this.id }, 'failed to announce'));
  }

  private publish(leaving: boolean): Promise<void> {
    const { tier, id, url, platforms = [], labels = {}, ops = [] } = this.service;
    return publishEvent(this.bus, servicesSubject(tier), events.ServiceAnnouncementSchema, {
      tier,
      id,
      url,
      platforms,
      labels,
      ops,
      time: timestampNow(),
      leaving,
    });
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      clearInterval(this.timer);
      this.signal?.removeEventListener('abort', this.onAbort);
      this.probes?.unsubscribe();
      await this.publish(true).catch((err: unknown) => this.logger.debug({ err, tier: this.tier, id: this.id }, 'failed to announce leaving'));
      this.onStop();
    })();
    return this.stopping;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

