import type { control } from '@kiln/api';
import type { ProgressMode } from '../build/build-options.js';
import { createPlainPrinter } from './plain-printer.js';
import { createRawJsonPrinter } from './rawjson-printer.js';

/** Minimal writable the printers use (process.stderr in the CLI). */
export interface TextSink {
  write(text: string): unknown;
}

/**
 * Renders a build's Status stream. `write` is called for each update in
 * order; `close` once the stream ended (flushes partial log lines).
 */
export interface ProgressPrinter {
  write(status: control.StatusResponse): void;
  close(): void;
}

/**
 * A printer for `--progress`. `auto` and `tty` print plain output for now;
 * a live terminal UI for `tty` (and `auto` on a terminal) comes later.
 */
export function createProgressPrinter(mode: ProgressMode, out: TextSink, now: () => number = Date.now): ProgressPrinter {
  switch (mode) {
    case 'rawjson':
      return createRawJsonPrinter(out);
    case 'plain':
    case 'tty':
    case 'auto':
      return createPlainPrinter(out, now);
  }
}
