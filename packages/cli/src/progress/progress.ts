import type { control } from '@kiln/api';
import type { ProgressMode } from '../build/build-options.js';
import { createPlainPrinter } from './plain-printer.js';
import { createRawJsonPrinter } from './rawjson-printer.js';
import { createTtyPrinter, realClock, type TtySink } from './tty-printer.js';

/** Minimal writable the printers use (process.stderr in the CLI). */
export interface TextSink {
  write(text: string): unknown;
}

/** Time for the printers; tests drive a fake one. `setInterval` returns its own cancel. */
export interface ProgressClock {
  now(): number;
  setInterval(fn: () => void, ms: number): () => void;
}

/**
 * Renders a build's Status stream. `write` is called for each update in
 * order; `close` once the stream ended (flushes partial log lines, draws
 * the final tty frame).
 */
export interface ProgressPrinter {
  write(status: control.StatusResponse): void;
  close(): void;
}

/**
 * A printer for `--progress`: `auto` is `tty` when `out` is a terminal
 * (and TERM is not "dumb"), else `plain`; `quiet` and `none` print nothing.
 */
export function createProgressPrinter(
  mode: ProgressMode,
  out: TtySink & { isTTY?: boolean },
  opts: { clock?: ProgressClock; term?: string } = {},
): ProgressPrinter {
  const clock = opts.clock ?? realClock;
  switch (mode) {
    case 'rawjson':
      return createRawJsonPrinter(out);
    case 'quiet':
    case 'none':
      return { write() {}, close() {} };
    case 'tty':
      return createTtyPrinter(out, { clock });
    case 'plain':
      return createPlainPrinter(out, () => clock.now());
    case 'auto':
      return out.isTTY === true && opts.term !== 'dumb' ? createTtyPrinter(out, { clock }) : createPlainPrinter(out, () => clock.now());
  }
}
