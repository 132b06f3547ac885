/**
 * Subjects of build progress. `kiln.build.<buildId>.<kind>` is the one
 * stream a build's Status and history are made from, and only the solver
 * publishes there. Workers publish their part (step output, transfer
 * status) on `kiln.progress.<workerId>.<buildId>.<kind>`; the solver relays
 * it only from a worker the build runs on. nats-server permissions then
 * keep any other client from writing into a build (see deploy/nats).
 */

/** The kinds of event on `kiln.build.<id>.*`, one per `BuildEvent` case. */
export type BuildEventKind = 'vertex' | 'status' | 'log' | 'warning' | 'done';

/** The kinds a worker may publish about a build. */
export const WORKER_PROGRESS_KINDS = ['status', 'log'] as const;
export type WorkerProgressKind = (typeof WORKER_PROGRESS_KINDS)[number];

/** `kiln.build.<buildId>.<kind>`. */
export function buildEventSubject(buildId: string, kind: BuildEventKind): string {
  return `kiln.build.${subjectToken(buildId)}.${kind}`;
}

/** `kiln.progress.<workerId>.<buildId>.<kind>`: where worker `workerId` reports on a build. */
export function workerProgressSubject(workerId: string, buildId: string, kind: WorkerProgressKind): string {
  return `kiln.progress.${subjectToken(workerId)}.${subjectToken(buildId)}.${kind}`;
}

/** Subscribes to every worker's progress. */
export const WORKER_PROGRESS_WILDCARD = 'kiln.progress.*.*.*';

/** The parts of a worker progress subject; undefined for any other subject. */
export function parseWorkerProgressSubject(subject: string): { workerToken: string; buildId: string; kind: WorkerProgressKind } | undefined {
  const parts = subject.split('.');
  if (parts.length !== 5 || parts[0] !== 'kiln' || parts[1] !== 'progress') return undefined;
  const kind = parts[4] as WorkerProgressKind;
  if (!WORKER_PROGRESS_KINDS.includes(kind)) return undefined;
  return { workerToken: parts[2]!, buildId: parts[3]!, kind };
}

/**
 * An id as one subject token: characters other than `[A-Za-z0-9_-]` (dots
 * of a host name, wildcards, spaces) become `_`. Compare ids by their token.
 */
export function subjectToken(id: string): string {
  return id.replace(/[^A-Za-z0-9_-]/g, '_');
}

/**
 * The JetStream stream holding every build event: the solver's
 * (`kiln.build.>`) and the workers' progress (`kiln.progress.>`). The solver
 * creates it at start and reads the workers' part from it, so progress a
 * worker sent while NATS or the solver's connection was down arrives, in
 * order, once both are back.
 */
export const BUILD_EVENT_STREAM = { name: 'KILN_EVENTS', subjects: ['kiln.build.>', 'kiln.progress.>'] } as const;
