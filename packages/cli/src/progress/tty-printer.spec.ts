import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { control } from '@kiln/api';
import { describe, expect, it } from 'vitest';
import { createProgressPrinter, type ProgressClock } from './progress.js';

const T0 = 1_700_000_000_000;
const ts = (ms: number) => timestampFromMs(T0 + ms);
type Update = MessageInitShape<typeof control.StatusResponseSchema>;

/** A clock whose interval timers fire only when the test advances it. */
function fakeClock(): ProgressClock & { advance(ms: number): void } {
  let now = T0;
  const timers = new Set<{ fn: () => void; every: number; next: number }>();
  return {
    now: () => now,
    setInterval(fn, every) {
      const t = { fn, every, next: now + every };
      timers.add(t);
      return () => timers.delete(t);
    },
    advance(ms) {
      const end = now + ms;
      for (;;) {
        const due = [...timers].filter((t) => t.next <= end).sort((a, b) => a.next - b.next)[0];
        if (!due) break;
        now = due.next;
        due.next += due.every;
        due.fn();
      }
      now = end;
    },
  };
}

/**
 * Just enough of a terminal to replay the printer's output: cursor up
 * (`ESC[nA`), carriage return, erase to end of line (`ESC[K`) and of
 * screen (`ESC[J`), cursor show/hide.
 */
class Screen {
  lines: string[] = [''];
  row = 0;
  col = 0;
  write(text: string): void {
    const re = /\x1b\[(\??\d*)([AKJlh])|\r|\n|[^\x1b\r\n]+/g;
    for (const m of text.matchAll(re)) {
      const tok = m[0];
      if (m[2] === 'A') this.row = Math.max(0, this.row - Number(m[1] || 1));
      else if (m[2] === 'K') this.lines[this.row] = (this.lines[this.row] ?? '').slice(0, this.col);
      else if (m[2] === 'J') {
        this.lines[this.row] = (this.lines[this.row] ?? '').slice(0, this.col);
        this.lines.length = this.row + 1;
      } else if (m[2] === 'l' || m[2] === 'h') continue;
      else if (tok === '\r') this.col = 0;
      else if (tok === '\n') {
        this.row++;
        this.col = 0;
        this.lines[this.row] ??= '';
      } else {
        const cur = (this.lines[this.row] ?? '').padEnd(this.col);
        this.lines[this.row] = cur.slice(0, this.col) + tok + cur.slice(this.col + tok.length);
        this.col += tok.length;
      }
    }
  }
  text(): string {
    return this.lines.map((l) => l.trimEnd()).join('\n').trimEnd();
  }
}

function tty(columns = 61, rows = 30) {
  const screen = new Screen();
  let raw = '';
  const clock = fakeClock();
  const sink = { columns, rows, isTTY: true, write: (s: string) => ((raw += s), screen.write(s)) };
  const printer = createProgressPrinter('auto', sink, { clock });
  const send = (u: Update) => printer.write(create(control.StatusResponseSchema, u));
  return { screen, clock, printer, send, raw: () => raw };
}

describe('tty progress', () => {
  it('redraws a live frame on the clock: timers, CACHED, transfer lines, log tails, collapsing finished steps', () => {
    const t = tty();
    t.send({ vertexes: [{ digest: 'a', name: '[internal] load build definition from Dockerfile', started: ts(0) }] });
    t.send({ statuses: [{ id: 'transferring dockerfile:', vertex: 'a', current: 91n, started: ts(0), completed: ts(20) }] });
    t.clock.advance(100);
    expect(t.screen.text()).toBe(
      [
        '[+] Building 0.1s (0/1)',
        ' => [internal] load build definition from Dockerfile    0.1s',
        ' => => transferring dockerfile: 91B                     0.0s',
      ].join('\n'),
    );

    t.send({ vertexes: [{ digest: 'a', name: '[internal] load build definition from Dockerfile', started: ts(0), completed: ts(30) }] });
    t.send({ vertexes: [{ digest: 'b', name: '[1/3] FROM docker.io/library/busybox', cached: true, started: ts(150), completed: ts(150) }] });
    t.send({ vertexes: [{ digest: 'c', name: '[2/3] RUN for i in 1 2 3 4 5 6 7 8; do echo line $i; done', started: ts(160) }] });
    t.send({ logs: [{ vertex: 'c', stream: 1, msg: Buffer.from('line 1\nline 2\nline 3\nline 4\nline 5\nline 6\nline 7\nline'), timestamp: ts(300) }] });
    t.clock.advance(1100);
    expect(t.screen.text()).toBe(
      [
        '[+] Building 1.2s (2/3)',
        ' => [internal] load build definition from Dockerfile    0.0s',
        ' => CACHED [1/3] FROM docker.io/library/busybox         0.0s',
        ' => [2/3] RUN for i in 1 2 3 4 5 6 7 8; do echo line $i 1.0s',
        ' => => # line 3',
        ' => => # line 4',
        ' => => # line 5',
        ' => => # line 6',
        ' => => # line 7',
        ' => => # line',
      ].join('\n'),
    );

    t.send({ vertexes: [{ digest: 'c', name: '[2/3] RUN for i in 1 2 3 4 5 6 7 8; do echo line $i; done', started: ts(160), completed: ts(1400) }] });
    t.send({ vertexes: [{ digest: 'd', name: '[3/3] COPY a /a', started: ts(1400), completed: ts(1500), error: 'failed to copy: lstat /a: no such file' }] });
    t.send({ warnings: [{ vertex: 'd', short: Buffer.from('FromAsCasing: as vs FROM (line 1)') }] });
    t.clock.advance(300);
    t.printer.close();
    expect(t.screen.text()).toBe(
      [
        '[+] Building 1.5s (4/4) FINISHED',
        ' => [internal] load build definition from Dockerfile    0.0s',
        ' => => transferring dockerfile: 91B                     0.0s',
        ' => CACHED [1/3] FROM docker.io/library/busybox         0.0s',
        ' => [2/3] RUN for i in 1 2 3 4 5 6 7 8; do echo line $i 1.2s',
        ' => ERROR [3/3] COPY a /a                               0.1s',
        ' 1 warning found:',
        ' - FromAsCasing: as vs FROM (line 1)',
      ].join('\n'),
    );
    expect(t.raw()).toContain('\x1b[?25l');
    expect(t.raw().endsWith('\x1b[?25h')).toBe(true);
  });

  it('drops the oldest finished steps first when the frame is taller than the terminal', () => {
    const t = tty(41, 5);
    for (let i = 1; i <= 6; i++) t.send({ vertexes: [{ digest: `v${i}`, name: `step ${i}`, started: ts(i * 10), completed: ts(i * 10 + 5) }] });
    t.send({ vertexes: [{ digest: 'run', name: 'running step', started: ts(100) }] });
    t.send({ logs: [{ vertex: 'run', stream: 1, msg: Buffer.from('out\n') }] });
    t.clock.advance(500);
    expect(t.screen.text()).toBe(
      ['[+] Building 0.5s (6/7)', ' => step 6                          0.0s', ' => running step                    0.4s', ' => => # out'].join('\n'),
    );
    // The next frame overwrites this one in place: the screen never grows past the terminal.
    t.clock.advance(500);
    expect(t.screen.lines.length).toBeLessThanOrEqual(5);
    t.printer.close();
    expect(t.screen.text().split('\n')).toHaveLength(9);
  });

  it('cuts lines to one column less than the terminal width', () => {
    const t = tty(31, 10);
    t.send({ vertexes: [{ digest: 'x', name: 'a very long step name that does not fit', started: ts(0) }] });
    t.clock.advance(100);
    for (const line of t.screen.lines) expect(line.length).toBeLessThanOrEqual(30);
    expect(t.screen.lines[1]).toBe(' => a very long step name 0.1s');
  });

  it('tty is chosen explicitly even when the output is not a terminal; nothing is drawn before the first update', () => {
    let out = '';
    const p = createProgressPrinter('tty', { write: (s: string) => (out += s) }, { clock: fakeClock() });
    p.close();
    expect(out).toBe('');
  });
});

describe('tty progress with hostile text', () => {
  it('escapes control bytes in names, labels, logs and warnings, keeping its own ANSI', () => {
    const t = tty(80);
    t.send({ vertexes: [{ digest: 'a', name: 'RUN \x1b[2J\x1b]0;t\x07', started: ts(0) }] });
    t.send({ statuses: [{ id: 'fetch \x1b[1A', vertex: 'a', current: 1n, started: ts(0) }] });
    t.send({ logs: [{ vertex: 'a', stream: 1, msg: Buffer.from('\x1b]52;c;aGk=\x07\n'), timestamp: ts(10) }] });
    t.send({ warnings: [{ vertex: 'a', short: Buffer.from('w \x1b[8m') }] });
    t.clock.advance(100);
    t.send({ vertexes: [{ digest: 'a', name: 'RUN \x1b[2J\x1b]0;t\x07', started: ts(0), completed: ts(150) }] });
    t.printer.close();
    // Only the printer's own sequences: cursor up, erase line/screen, hide/show cursor.
    const foreign = t.raw().replace(/\x1b\[(\d+A\r|2K|J|\?25[lh])/g, '');
    // eslint-disable-next-line no-control-regex
    expect(foreign).not.toMatch(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/);
    expect(t.screen.text()).toContain('RUN \\x1b[2J\\x1b]0;t\\x07');
    expect(t.screen.text()).toContain('fetch \\x1b[1A');
    expect(t.screen.text()).toContain(' - w \\x1b[8m');
  });
});
