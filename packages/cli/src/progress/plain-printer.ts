import { timestampMs, type Timestamp } from '@bufbuild/protobuf/wkt';
import type { control } from '@kiln/api';
import { escapeControl } from '@kiln/common';
import { formatBytes, formatSeconds } from './format.js';
import type { ProgressPrinter, TextSink } from './progress.js';

interface VertexState {
  index: number;
  name: string;
  started?: number;
  completed?: number;
  cached: boolean;
  error: string;
  shown: boolean;
  finished: boolean;
  statuses: Map<string, { lastPrintMs: number; done: boolean }>;
  /** Unterminated log text per stream. */
  partial: Map<number, string>;
}

/** In-progress status lines repeat at most this often. */
const STATUS_INTERVAL_MS = 1000;

/**
 * buildx's plain progress: one `#N name` header per step (repeated when
 * output switches between steps), then its status, log and result lines:
 *
 *     #1 [internal] load build definition from Dockerfile
 *     #1 transferring dockerfile: 91B done
 *     #1 DONE 0.0s
 *
 *     #2 [1/2] RUN echo hi
 *     #2 0.123 hi
 *     #2 DONE 0.2s
 */
export function createPlainPrinter(sink: TextSink, now: () => number = Date.now): ProgressPrinter {
  // Plain output has no ANSI of its own: every control byte a build sent is shown escaped.
  const out: TextSink = { write: (text: string) => sink.write(escapeControl(text)) };
  const vertexes = new Map<string, VertexState>();
  let nextIndex = 1;
  let current: VertexState | undefined;
  let printedAny = false;

  const line = (text: string) => {
    out.write(`${text}\n`);
    printedAny = true;
  };
  const get = (digest: string): VertexState => {
    let v = vertexes.get(digest);
    if (!v) {
      v = { index: nextIndex++, name: digest, cached: false, error: '', shown: false, finished: false, statuses: new Map(), partial: new Map() };
      vertexes.set(digest, v);
    }
    return v;
  };
  const focus = (v: VertexState) => {
    if (current === v) return;
    if (printedAny) out.write('\n');
    line(`#${v.index} ${v.name}`);
    current = v;
    v.shown = true;
  };
  const logLine = (v: VertexState, text: string, atMs: number | undefined) => {
    focus(v);
    const rel = v.started !== undefined && atMs !== undefined ? (atMs - v.started) / 1000 : 0;
    line(`#${v.index} ${Math.max(0, rel).toFixed(3)} ${text}`);
  };
  const flushPartial = (v: VertexState) => {
    for (const text of v.partial.values()) if (text !== '') logLine(v, text, undefined);
    v.partial.clear();
  };
  const ms = (t: Timestamp | undefined) => (t ? timestampMs(t) : undefined);

  return {
    write(status: control.StatusResponse) {
      const completedNow: VertexState[] = [];
      for (const vx of status.vertexes) {
        const v = get(vx.digest);
        if (vx.name) v.name = vx.name;
        v.started = ms(vx.started) ?? v.started;
        v.completed = ms(vx.completed) ?? v.completed;
        v.cached = v.cached || vx.cached;
        v.error = vx.error || v.error;
        if (!v.shown && (v.started !== undefined || v.cached || v.completed !== undefined)) focus(v);
        if (!v.finished && (v.completed !== undefined || v.error !== '' || v.cached)) completedNow.push(v);
      }
      for (const st of status.statuses) {
        const v = get(st.vertex);
        const key = st.id || st.name;
        const seen = v.statuses.get(key) ?? { lastPrintMs: 0, done: false };
        v.statuses.set(key, seen);
        if (seen.done) continue;
        const label = st.name || st.id;
        const amount = st.total > 0n ? ` ${formatBytes(st.current)} / ${formatBytes(st.total)}` : st.current > 0n ? ` ${formatBytes(st.current)}` : '';
        if (st.completed) {
          seen.done = true;
          focus(v);
          line(`#${v.index} ${label}${amount} done`);
        } else if (now() - seen.lastPrintMs >= STATUS_INTERVAL_MS) {
          seen.lastPrintMs = now();
          const startedMs = ms(st.started);
          const at = ms(st.timestamp) ?? now();
          focus(v);
          line(`#${v.index} ${label}${amount}${startedMs !== undefined ? ` ${formatSeconds(at - startedMs)}` : ''}`);
        }
      }
      for (const lg of status.logs) {
        const v = get(lg.vertex);
        const text = (v.partial.get(lg.stream) ?? '') + Buffer.from(lg.msg).toString('utf8');
        const parts = text.split('\n');
        v.partial.set(lg.stream, parts.pop()!);
        for (const p of parts) logLine(v, p.replace(/\r$/, ''), ms(lg.timestamp));
      }
      for (const w of status.warnings) {
        const short = Buffer.from(w.short).toString('utf8');
        if (w.vertex) {
          const v = get(w.vertex);
          focus(v);
          line(`#${v.index} WARNING: ${short}`);
        } else {
          line(`WARNING: ${short}`);
        }
      }
      for (const v of completedNow) {
        if (v.finished) continue;
        v.finished = true;
        flushPartial(v);
        focus(v);
        if (v.error) line(`#${v.index} ERROR: ${v.error}`);
        else if (v.cached) line(`#${v.index} CACHED`);
        else line(`#${v.index} DONE ${formatSeconds((v.completed ?? now()) - (v.started ?? v.completed ?? now()))}`);
      }
    },
    close() {
      for (const v of vertexes.values()) flushPartial(v);
    },
  };
}
