import { events } from '@kiln/api';
import { fromBinary } from '@bufbuild/protobuf';
import { parseWorkerProgressSubject, subjectToken, WORKER_PROGRESS_WILDCARD, type EventStream, type StreamMessage } from '@kiln/bus';
import type { Logger } from '@kiln/common';

type BuildEvent = events.BuildEvent;

/**
 * Brings workers' progress (`kiln.progress.<workerId>.<buildId>.status|log`)
 * into builds. An event is taken only while the build is open, from a
 * worker the solver chose for it (`allow`), when its subject, build id and
 * kind agree with its payload. Everything else is dropped and logged: a
 * client on the bus cannot write into someone else's build, and a worker
 * can write only into builds it runs (and never a vertex, warning or done).
 *
 * It reads the build event stream (on NATS: JetStream, `KILN_EVENTS`), so
 * progress a worker sent while NATS or this solver's connection was down
 * arrives, in order, once both are back.
 */
export class WorkerProgressRelay {
  /** Open builds: build id -> subject tokens of the workers allowed to report on it. */
  private readonly builds = new Map<string, Set<string>>();
  private readonly stop = new AbortController();
  /** Resolves when the reader stops (rejects only if the stream cannot be read at all). */
  readonly done: Promise<void>;
  /** Resolves once the reader is in place on the stream. */
  readonly reading: Promise<void>;
  /** Refusals logged per (worker, build), so a flood logs once. */
  private readonly refusedLogged = new Set<string>();

  /**
   * `ready` gates the start (the solver's stream setup); `readerName` names
   * this solver's consumer on the stream.
   */
  constructor(
    stream: EventStream,
    private readonly deliver: (ev: BuildEvent) => void,
    private readonly logger: Logger,
    opts: { readerName: string; ready?: Promise<void> } = { readerName: 'solver' },
  ) {
    const start = opts.ready ?? Promise.resolve();
    let onReady = () => {};
    this.reading = new Promise<void>((r) => (onReady = r));
    this.done = start.then(() => stream.consume(WORKER_PROGRESS_WILDCARD, (m) => this.take(m), { signal: this.stop.signal, name: opts.readerName, onReady }));
    this.done.catch((err: unknown) => this.logger.error({ err }, 'failed to read workers\' progress from the build event stream'));
  }

  private take(m: StreamMessage): void {
    let message: BuildEvent;
    try {
      message = fromBinary(events.BuildEventSchema, m.data);
    } catch (err) {
      this.refuse(m.subject, 'payload is not a BuildEvent', err);
      return;
    }
    const reason = this.check(m.subject, message);
    if (reason) this.refuse(m.subject, reason);
    else this.deliver(message);
  }

  /** Why the event must not enter its build; undefined when it may. */
  private check(subject: string, ev: BuildEvent): string | undefined {
    const parsed = parseWorkerProgressSubject(subject);
    if (!parsed) return 'not a worker progress subject';
    const workers = this.builds.get(parsed.buildId);
    if (!workers) return 'no such build is running';
    if (!workers.has(parsed.workerToken)) return `worker "${parsed.workerToken}" does not run this build`;
    if (ev.buildId !== parsed.buildId) return `payload names build "${ev.buildId}"`;
    if (ev.event.case !== parsed.kind) return `payload is a "${ev.event.case ?? 'empty'}" event on a "${parsed.kind}" subject`;
    return undefined;
  }

  private refuse(subject: string, reason: string, err?: unknown): void {
    const key = subject.split('.').slice(2, 4).join('.');
    if (this.refusedLogged.has(key)) return;
    if (this.refusedLogged.size > 1000) this.refusedLogged.clear();
    this.refusedLogged.add(key);
    this.logger.warn({ subject, reason, err }, 'dropped worker progress');
  }

  /** Opens `buildId` to progress from worker `workerId` (call for each worker the build uses). */
  allow(buildId: string, workerId: string): void {
    let workers = this.builds.get(buildId);
    if (!workers) {
      workers = new Set();
      this.builds.set(buildId, workers);
    }
    workers.add(subjectToken(workerId));
  }

  /** Closes `buildId`: later progress for it is dropped. */
  end(buildId: string): void {
    this.builds.delete(buildId);
    for (const key of this.refusedLogged) if (key.endsWith(`.${buildId}`)) this.refusedLogged.delete(key);
  }

  close(): void {
    this.stop.abort();
  }
}
