import { events } from '@kiln/api';
import { parseWorkerProgressSubject, subjectToken, subscribeEvents, WORKER_PROGRESS_WILDCARD, type EventBus, type EventSubscription } from '@kiln/bus';
import type { Logger } from '@kiln/common';

type BuildEvent = events.BuildEvent;

/**
 * Brings workers' progress (`kiln.progress.<workerId>.<buildId>.status|log`)
 * into builds. An event is taken only while the build is open, from a
 * worker the solver chose for it (`allow`), when its subject, build id and
 * kind agree with its payload. Everything else is dropped and logged: a
 * client on the bus cannot write into someone else's build, and a worker
 * can write only into builds it runs (and never a vertex, warning or done).
 */
export class WorkerProgressRelay {
  /** Open builds: build id -> subject tokens of the workers allowed to report on it. */
  private readonly builds = new Map<string, Set<string>>();
  private readonly sub: EventSubscription<BuildEvent>;
  /** Refusals logged per (worker, build), so a flood logs once. */
  private readonly refusedLogged = new Set<string>();

  constructor(
    bus: EventBus,
    private readonly deliver: (ev: BuildEvent) => void,
    private readonly logger: Logger,
  ) {
    this.sub = subscribeEvents(bus, WORKER_PROGRESS_WILDCARD, events.BuildEventSchema, {
      onDecodeError: (err, subject) => this.refuse(subject, 'payload is not a BuildEvent', err),
    });
    void this.consume();
  }

  private async consume(): Promise<void> {
    for await (const { subject, message } of this.sub) {
      const reason = this.check(subject, message);
      if (reason) this.refuse(subject, reason);
      else this.deliver(message);
    }
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
    this.sub.unsubscribe();
  }
}
