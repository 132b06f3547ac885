import { create } from '@bufbuild/protobuf';
import { control, events } from '@kiln/api';
import { createChannel, type Channel } from '@kiln/common';

type BuildEvent = events.BuildEvent;

/** Builds whose events are kept after they end, newest last. */
const KEEP_FINISHED = 100;

interface Record {
  events: BuildEvent[];
  done: boolean;
  followers: Set<Channel<BuildEvent>>;
  /** Resolvers of `settled` calls waiting for the done event. */
  waiters: (() => void)[];
}

/**
 * BuildRecords keeps every build's events: the solver's own (added as it
 * publishes them, not read back from the bus, so Status and history go on
 * while NATS is down) and those its workers sent (through
 * `WorkerProgressRelay`; during a NATS outage their NATS clients buffer them
 * and they arrive, in order, when it returns). Status replays what happened
 * before the client asked and then follows live.
 */
export class BuildRecords {
  private readonly records = new Map<string, Record>();

  /** `onDone` sees each build's whole event list once its done event arrived. */
  constructor(private readonly onDone?: (buildId: string, events: readonly BuildEvent[]) => void) {}

  /** Records an event: the solver's own, or a worker's progress the relay accepted. Events after a build's done are ignored. */
  add(ev: BuildEvent): void {
    const r = this.record(ev.buildId);
    if (r.done) return;
    r.events.push(ev);
    for (const f of r.followers) f.push(ev);
    if (ev.event.case === 'done') {
      r.done = true;
      for (const f of r.followers) f.end();
      r.followers.clear();
      this.onDone?.(ev.buildId, r.events);
      for (const w of r.waiters.splice(0)) w();
      this.trim();
    }
  }

  /** Replays a build's events, then follows until it is done or `signal` aborts. */
  async *follow(buildId: string, signal?: AbortSignal): AsyncIterable<BuildEvent> {
    const r = this.record(buildId);
    const live = createChannel<BuildEvent>();
    const past = [...r.events];
    if (r.done) live.end();
    else r.followers.add(live);
    const onAbort = () => live.end();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      yield* past;
      yield* live;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      r.followers.delete(live);
    }
  }

  /** Resolves once the build's done event was recorded, or after `timeoutMs`. */
  async settled(buildId: string, timeoutMs: number): Promise<void> {
    const r = this.record(buildId);
    if (r.done) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      r.waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  close(): void {
    for (const r of this.records.values()) for (const f of r.followers) f.end();
  }

  private record(id: string): Record {
    let r = this.records.get(id);
    if (!r) {
      r = { events: [], done: false, followers: new Set(), waiters: [] };
      this.records.set(id, r);
    }
    return r;
  }

  private trim(): void {
    const finished = [...this.records.entries()].filter(([, r]) => r.done);
    for (const [id] of finished.slice(0, Math.max(0, finished.length - KEEP_FINISHED))) this.records.delete(id);
  }
}

/** One bus event as a Status stream message; `undefined` for the done marker. */
export function toStatusResponse(ev: BuildEvent): control.StatusResponse | undefined {
  switch (ev.event.case) {
    case 'vertex':
      return create(control.StatusResponseSchema, { vertexes: [ev.event.value] });
    case 'status':
      return create(control.StatusResponseSchema, { statuses: [ev.event.value] });
    case 'log':
      return create(control.StatusResponseSchema, { logs: [ev.event.value] });
    case 'warning':
      return create(control.StatusResponseSchema, { warnings: [ev.event.value] });
    default:
      return undefined;
  }
}
