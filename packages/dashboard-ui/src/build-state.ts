import { timestampMs, type Timestamp } from './timestamps.js';

/** What a Status (or HistoryLogs) update carries, as the generated messages have it. */
export interface StatusUpdate {
  vertexes: { digest: string; inputs: string[]; name: string; cached: boolean; started?: Timestamp; completed?: Timestamp; error: string; cacheMiss: string }[];
  statuses: { vertex: string; name: string; current: bigint; total: bigint }[];
  logs: { vertex: string; timestamp?: Timestamp; stream: number; msg: Uint8Array }[];
  warnings: { vertex: string; short: Uint8Array }[];
}

export type StepState = 'pending' | 'running' | 'done' | 'cached' | 'error';

export interface Step {
  digest: string;
  name: string;
  inputs: string[];
  /** 1-based in the order the build reported its steps (the `#N` of the plain progress). */
  number: number;
  state: StepState;
  startedMs?: number;
  completedMs?: number;
  error: string;
  /** Why the step ran instead of coming from the cache (empty when cached or not cacheable). */
  cacheMiss: string;
}

export interface LogLine {
  step: number;
  stream: number;
  text: string;
}

/** Logs kept per build in the page; older lines are dropped first. */
export const MAX_LOG_LINES = 5000;

/**
 * One build's progress, folded from its Status stream: the latest word on
 * each step (events for a vertex repeat it whole), and its output split
 * into lines (a line may arrive in pieces).
 */
export class BuildState {
  readonly steps = new Map<string, Step>();
  readonly logs: LogLine[] = [];
  readonly warnings: string[] = [];
  readonly #partial = new Map<string, string>();
  readonly #decoder = new TextDecoder();

  apply(u: StatusUpdate): void {
    for (const v of u.vertexes) {
      const prev = this.steps.get(v.digest);
      const startedMs = timestampMs(v.started) ?? prev?.startedMs;
      const completedMs = timestampMs(v.completed) ?? prev?.completedMs;
      const state: StepState = v.error ? 'error' : v.cached ? 'cached' : completedMs !== undefined ? 'done' : startedMs !== undefined ? 'running' : 'pending';
      this.steps.set(v.digest, {
        digest: v.digest,
        name: v.name || prev?.name || v.digest.slice(0, 19),
        inputs: v.inputs.length ? [...v.inputs] : (prev?.inputs ?? []),
        number: prev?.number ?? this.steps.size + 1,
        state,
        ...(startedMs !== undefined ? { startedMs } : {}),
        ...(completedMs !== undefined ? { completedMs } : {}),
        error: v.error || prev?.error || '',
        cacheMiss: v.cacheMiss || prev?.cacheMiss || '',
      });
    }
    for (const l of u.logs) {
      const text = (this.#partial.get(l.vertex) ?? '') + this.#decoder.decode(l.msg);
      const lines = text.split('\n');
      this.#partial.set(l.vertex, lines.pop() ?? '');
      const step = this.steps.get(l.vertex)?.number ?? 0;
      for (const line of lines) this.logs.push({ step, stream: l.stream, text: line.replace(/\r$/, '') });
    }
    for (const w of u.warnings) this.warnings.push(this.#decoder.decode(w.short));
    if (this.logs.length > MAX_LOG_LINES) this.logs.splice(0, this.logs.length - MAX_LOG_LINES);
  }

  /** Steps in the order they were first reported. */
  ordered(): Step[] {
    return [...this.steps.values()].sort((a, b) => a.number - b.number);
  }

  /** Cached steps over steps that finished (cached or ran), for the hit ratio. */
  hitRatio(): { cached: number; finished: number } {
    let cached = 0;
    let finished = 0;
    for (const s of this.steps.values()) {
      if (s.state === 'cached') cached++;
      if (s.state === 'cached' || s.state === 'done') finished++;
    }
    return { cached, finished };
  }
}
