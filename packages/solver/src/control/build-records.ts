import { create } from '@bufbuild/protobuf';
import { control, events } from '@kiln/api';
import { subscribeEvents, type EventBus } from '@kiln/bus';
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
 * BuildRecords collects every build's events from the bus (subject
 * `kiln.build.<id>.*`, published by the solver) and those its workers sent
 * (through `WorkerProgressRelay`, with `add`) so Status can replay what
 * happened before the client asked and then follow live.
 */
export class BuildRecords {
  private readonly records = new Map<string, Record>();
  private readonly sub;

  /** `onDone` sees each build's whole event list once its done event arrived. */
  constructor(bus: EventBus, private readonly onDone?: (buildId: string, events: readonly BuildEvent[]) => void) {
    this.sub = subscribeEvents(bus, 'kiln.build.>', events.BuildEventSchema);
    void this.consume();
  }

  private async consume(): Promise<void> {
    for await (const { message } of this.sub) this.add(message);
  }

  /** Records an event directly: a worker's progress the relay accepted (the solver's own events arrive through the bus). */
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
    this.sub.unsubscribe();
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
