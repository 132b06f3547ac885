import { timestampMs, type Timestamp } from '@bufbuild/protobuf/wkt';
import type { control } from '@kiln/api';
import { escapeControl } from '@kiln/common';
import { formatBytes } from './format.js';
import type { ProgressClock, ProgressPrinter, TextSink } from './progress.js';

/** A terminal: where frames go and its size (read at every frame, so resizes apply). */
export interface TtySink extends TextSink {
  columns?: number;
  rows?: number;
}

export interface TtyPrinterOptions {
  clock?: ProgressClock;
  /** Redraw interval (default 100 ms, as buildx). */
  refreshMs?: number;
  /** Log lines shown under each running step (default 6, env BUILDKIT_TTY_LOG_LINES in buildx). */
  logLines?: number;
}

interface StatusState {
  label: string;
  current: bigint;
  total: bigint;
  started?: number;
  completed?: number;
  timestamp?: number;
}

interface VertexState {
  name: string;
  started?: number;
  completed?: number;
  cached: boolean;
  error: string;
  statuses: Map<string, StatusState>;
  /** Complete log lines (only the last few are kept) and the unterminated tail. */
  logs: string[];
  partial: string;
}

const ESC = '\x1b[';

export const realClock: ProgressClock = {
  now: () => Date.now(),
  setInterval: (fn, ms) => {
    const t = setInterval(fn, ms);
    t.unref?.();
    return () => clearInterval(t);
  },
};

/**
 * buildx's tty progress: a live frame redrawn in place with ANSI cursor
 * moves,
 *
 *     [+] Building 4.2s (7/9)
 *      => [internal] load build definition from Dockerfile          0.0s
 *      => CACHED [1/3] FROM docker.io/library/busybox               0.0s
 *      => [2/3] RUN make                                            4.1s
 *      => => # compiling foo.c
 *
 * Finished steps collapse to one line (their transfer lines come back in
 * the final frame); when the frame is taller than the terminal the oldest
 * finished steps leave it first. Running steps show their last log lines.
 * `close` draws the final frame (`FINISHED`) and lists the warnings.
 */
export function createTtyPrinter(out: TtySink, opts: TtyPrinterOptions = {}): ProgressPrinter {
  const clock = opts.clock ?? realClock;
  const logLines = opts.logLines ?? 6;
  const vertexes = new Map<string, VertexState>();
  const warnings: string[] = [];
  const startedAt = clock.now();
  let shownLines = 0;
  let stopTimer: (() => void) | undefined;

  const get = (digest: string): VertexState => {
    let v = vertexes.get(digest);
    if (!v) {
      v = { name: digest, cached: false, error: '', statuses: new Map(), logs: [], partial: '' };
      vertexes.set(digest, v);
    }
    return v;
  };

  const draw = (final: boolean) => {
    // One column short of the terminal: a full-width line leaves the cursor in the wrap column, where erasing eats its last character.
    const width = Math.max(20, (out.columns ?? 80) - 1);
    const maxLines = final ? Number.POSITIVE_INFINITY : Math.max(2, (out.rows ?? 24) - 1);
    const lines = renderFrame([...vertexes.values()], { now: clock.now(), startedAt, width, maxLines, final, logLines });
    let text = '';
    if (shownLines > 0) text += `${ESC}${shownLines}A\r`;
    for (const l of lines) text += `${ESC}2K${l}\n`;
    text += `${ESC}J`;
    out.write(text);
    shownLines = lines.length;
  };

  return {
    write(status: control.StatusResponse) {
      if (!stopTimer) {
        out.write(`${ESC}?25l`);
        stopTimer = clock.setInterval(() => draw(false), opts.refreshMs ?? 100);
      }
      for (const vx of status.vertexes) {
        const v = get(vx.digest);
        if (vx.name) v.name = vx.name;
        v.started = ms(vx.started) ?? v.started;
        v.completed = ms(vx.completed) ?? v.completed;
        v.cached ||= vx.cached;
        v.error = vx.error || v.error;
      }
      for (const st of status.statuses) {
        const v = get(st.vertex);
        const key = st.id || st.name;
        const s = v.statuses.get(key) ?? { label: st.name || st.id, current: 0n, total: 0n };
        Object.assign(s, { current: st.current, total: st.total, started: ms(st.started) ?? s.started, completed: ms(st.completed) ?? s.completed, timestamp: ms(st.timestamp) ?? s.timestamp });
        v.statuses.set(key, s);
      }
      for (const lg of status.logs) {
        const v = get(lg.vertex);
        const parts = (v.partial + Buffer.from(lg.msg).toString('utf8')).split('\n');
        v.partial = parts.pop()!;
        v.logs.push(...parts.map((p) => p.replace(/\r$/, '')));
        if (v.logs.length > logLines) v.logs.splice(0, v.logs.length - logLines);
      }
      for (const w of status.warnings) warnings.push(Buffer.from(w.short).toString('utf8'));
    },
    close() {
      stopTimer?.();
      if (!stopTimer) return;
      draw(true);
      if (warnings.length > 0) {
        out.write(` ${warnings.length} warning${warnings.length === 1 ? '' : 's'} found:\n${warnings.map((w) => ` - ${escapeControl(w)}\n`).join('')}`);
      }
      out.write(`${ESC}?25h`);
    },
  };
}

interface FrameOptions {
  now: number;
  startedAt: number;
  width: number;
  maxLines: number;
  final: boolean;
  logLines: number;
}

/** The lines of one frame (no ANSI): header, then one block per step. */
export function renderFrame(vertexes: readonly VertexState[], o: FrameOptions): string[] {
  const shown = vertexes.filter((v) => v.started !== undefined || v.completed !== undefined || v.cached);
  const done = shown.filter(isFinished).length;
  const firstStart = Math.min(o.startedAt, ...shown.map((v) => v.started ?? Number.POSITIVE_INFINITY));
  const lastEnd = o.final ? Math.max(firstStart, ...shown.map((v) => v.completed ?? firstStart)) : o.now;
  const header = `[+] Building ${seconds(lastEnd - firstStart)} (${done}/${shown.length})${o.final ? ' FINISHED' : ''}`;

  const blocks = shown.map((v) => {
    const finished = isFinished(v);
    const prefix = v.error ? 'ERROR ' : v.cached ? 'CACHED ' : '';
    const elapsed = v.cached ? 0 : (v.completed ?? o.now) - (v.started ?? o.now);
    // Names, labels and logs come from the build: escaped, so only this printer's ANSI reaches the terminal.
    const lines = [align(` => ${prefix}${escapeControl(v.name)}`, seconds(elapsed), o.width)];
    if (o.final || !finished) {
      for (const s of v.statuses.values()) {
        const amount = s.total > 0n ? ` ${formatBytes(s.current)} / ${formatBytes(s.total)}` : s.current > 0n ? ` ${formatBytes(s.current)}` : '';
        const end = s.completed ?? (finished ? (v.completed ?? o.now) : o.now);
        lines.push(align(` => => ${escapeControl(s.label)}${amount}`, seconds(end - (s.started ?? v.started ?? end)), o.width));
      }
    }
    if (!finished) {
      const tail = v.partial !== '' ? [...v.logs, v.partial].slice(-o.logLines) : v.logs;
      for (const l of tail) lines.push(truncate(` => => # ${escapeControl(l)}`, o.width));
    }
    return { lines, finished };
  });

  let total = 1 + blocks.reduce((n, b) => n + b.lines.length, 0);
  for (const b of blocks) {
    if (total <= o.maxLines) break;
    if (!b.finished) continue;
    total -= b.lines.length;
    b.lines = [];
  }
  const body = blocks.flatMap((b) => b.lines);
  return [header, ...(total > o.maxLines ? body.slice(body.length - (o.maxLines - 1)) : body)];
}

function isFinished(v: VertexState): boolean {
  return v.completed !== undefined || v.cached || v.error !== '';
}

function seconds(msValue: number): string {
  return `${(Math.max(0, msValue) / 1000).toFixed(1)}s`;
}

/** `left` padded so `right` ends at the last column; `left` is cut to fit. */
function align(left: string, right: string, width: number): string {
  const room = width - right.length - 1;
  return `${truncate(left, room).padEnd(room)} ${right}`;
}

function truncate(s: string, width: number): string {
  return s.length <= width ? s : s.slice(0, Math.max(0, width));
}

function ms(t: Timestamp | undefined): number | undefined {
  return t ? timestampMs(t) : undefined;
}
