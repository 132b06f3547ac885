import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { control } from '@kiln/api';
import { describe, expect, it } from 'vitest';
import { formatAgo, formatBytes, formatTable } from './format.js';
import { createProgressPrinter } from './progress.js';

const T0 = 1_700_000_000_000;
const ts = (ms: number) => timestampFromMs(T0 + ms);
const status = (init: MessageInitShape<typeof control.StatusResponseSchema>) => create(control.StatusResponseSchema, init);

function render(mode: 'plain' | 'rawjson' | 'auto' | 'quiet', updates: MessageInitShape<typeof control.StatusResponseSchema>[]): string {
  let text = '';
  let clock = T0;
  const p = createProgressPrinter(mode, { write: (s: string) => (text += s) }, { clock: { now: () => (clock += 1500), setInterval: () => () => undefined } });
  for (const u of updates) p.write(status(u));
  p.close();
  return text;
}

describe('plain progress', () => {
  it('prints buildx-style steps, statuses, logs, CACHED, DONE and ERROR', () => {
    const out = render('plain', [
      { vertexes: [{ digest: 'sha256:a', name: '[internal] load build definition from Dockerfile', started: ts(0) }] },
      { statuses: [{ id: 'transferring dockerfile:', vertex: 'sha256:a', current: 91n, completed: ts(10), started: ts(0), timestamp: ts(10) }] },
      { vertexes: [{ digest: 'sha256:a', name: '[internal] load build definition from Dockerfile', started: ts(0), completed: ts(40) }] },
      { vertexes: [{ digest: 'sha256:b', name: '[1/3] FROM docker.io/library/busybox', cached: true, started: ts(50), completed: ts(50) }] },
      { vertexes: [{ digest: 'sha256:c', name: '[2/3] RUN echo hi', started: ts(100) }] },
      { logs: [{ vertex: 'sha256:c', stream: 1, msg: Buffer.from('hi\nhal'), timestamp: ts(223) }] },
      { logs: [{ vertex: 'sha256:c', stream: 1, msg: Buffer.from('f\n'), timestamp: ts(300) }] },
      { vertexes: [{ digest: 'sha256:d', name: '[internal] load build context', started: ts(120) }] },
      { statuses: [{ id: 'transferring context:', vertex: 'sha256:d', current: 1234n, completed: ts(150) }] },
      { vertexes: [{ digest: 'sha256:d', name: '[internal] load build context', started: ts(120), completed: ts(160) }] },
      { vertexes: [{ digest: 'sha256:c', name: '[2/3] RUN echo hi', started: ts(100), completed: ts(400) }] },
      { vertexes: [{ digest: 'sha256:e', name: '[3/3] COPY a /a', started: ts(500) }] },
      {
        vertexes: [{ digest: 'sha256:e', name: '[3/3] COPY a /a', started: ts(500), completed: ts(600), error: 'failed to copy: lstat /a: no such file or directory' }],
        logs: [{ vertex: 'sha256:e', stream: 2, msg: Buffer.from('partial without newline'), timestamp: ts(550) }],
      },
    ]);
    expect(out).toBe(
      [
        '#1 [internal] load build definition from Dockerfile',
        '#1 transferring dockerfile: 91B done',
        '#1 DONE 0.0s',
        '',
        '#2 [1/3] FROM docker.io/library/busybox',
        '#2 CACHED',
        '',
        '#3 [2/3] RUN echo hi',
        '#3 0.123 hi',
        '#3 0.200 half',
        '',
        '#4 [internal] load build context',
        '#4 transferring context: 1.23kB done',
        '#4 DONE 0.0s',
        '',
        '#3 [2/3] RUN echo hi',
        '#3 DONE 0.3s',
        '',
        '#5 [3/3] COPY a /a',
        '#5 0.000 partial without newline',
        '#5 ERROR: failed to copy: lstat /a: no such file or directory',
        '',
      ].join('\n'),
    );
  });

  it('throttles in-progress status lines and prints totals', () => {
    const out = render('plain', [
      { vertexes: [{ digest: 'v', name: 'pull', started: ts(0) }] },
      { statuses: [{ id: 'sha256:layer', vertex: 'v', current: 1_000_000n, total: 3_400_000n, started: ts(0), timestamp: ts(400) }] },
      { statuses: [{ id: 'sha256:layer', vertex: 'v', current: 3_400_000n, total: 3_400_000n, started: ts(0), completed: ts(900) }] },
    ]);
    expect(out).toBe('#1 pull\n#1 sha256:layer 1.00MB / 3.40MB 0.4s\n#1 sha256:layer 3.40MB / 3.40MB done\n');
  });

  it('auto is plain when the output is not a terminal; quiet prints nothing', () => {
    expect(render('auto', [{ vertexes: [{ digest: 'x', name: 'step', started: ts(0), completed: ts(100) }] }])).toBe('#1 step\n#1 DONE 0.1s\n');
    expect(render('quiet', [{ vertexes: [{ digest: 'x', name: 'step', started: ts(0), completed: ts(100) }] }])).toBe('');
  });

  it('prints warnings', () => {
    const out = render('plain', [
      { vertexes: [{ digest: 'x', name: 'step', started: ts(0) }] },
      { warnings: [{ vertex: 'x', short: Buffer.from('FromAsCasing: as vs FROM') }, { short: Buffer.from('global') }] },
    ]);
    expect(out).toBe('#1 step\n#1 WARNING: FromAsCasing: as vs FROM\nWARNING: global\n');
  });
});

describe('rawjson progress', () => {
  it('prints one protobuf-JSON object per update', () => {
    const out = render('rawjson', [
      { vertexes: [{ digest: 'sha256:a', name: 'step', started: ts(0) }] },
      { logs: [{ vertex: 'sha256:a', stream: 1, msg: Buffer.from('hi\n') }] },
    ]);
    const lines = out.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toEqual([
      { vertexes: [{ digest: 'sha256:a', name: 'step', started: '2023-11-14T22:13:20Z' }] },
      { logs: [{ vertex: 'sha256:a', stream: 1, msg: Buffer.from('hi\n').toString('base64') }] },
    ]);
  });
});

describe('format', () => {
  it('formats bytes like buildx', () => {
    expect([0, 91, 999, 1000, 1234, 3_400_000, 5e9].map(formatBytes)).toEqual(['0B', '91B', '999B', '1.00kB', '1.23kB', '3.40MB', '5.00GB']);
  });
  it('formats ages', () => {
    const now = 1e12;
    expect([now, now - 1000, now - 90_000, now - 3 * 3600_000, now - 2 * 86400_000].map((t) => formatAgo(t, now))).toEqual([
      '0 seconds ago',
      '1 second ago',
      '1 minute ago',
      '3 hours ago',
      '2 days ago',
    ]);
  });
  it('aligns tables', () => {
    expect(formatTable([['ID', 'SIZE'], ['abc', '1B'], ['a', '10.00kB']])).toBe('ID   SIZE\nabc  1B\na    10.00kB\n');
  });
});

describe('plain progress with hostile text', () => {
  it('escapes control bytes in step names, logs, warnings and errors', () => {
    const out = render('plain', [
      { vertexes: [{ digest: 'sha256:a', name: '[1/1] RUN \x1b[2J\x1b]0;pwned\x07', started: ts(0) }] },
      { logs: [{ vertex: 'sha256:a', stream: 1, msg: Buffer.from('\x1b]52;c;aGk=\x07 out\r\n'), timestamp: ts(10) }] },
      { warnings: [{ vertex: 'sha256:a', short: Buffer.from('bad \x9b31m') }] },
      { vertexes: [{ digest: 'sha256:a', name: '[1/1] RUN \x1b[2J\x1b]0;pwned\x07', started: ts(0), completed: ts(20), error: 'failed \x1b[8m' }] },
    ]);
    // eslint-disable-next-line no-control-regex
    expect(out).not.toMatch(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/);
    expect(out).toContain('#1 [1/1] RUN \\x1b[2J\\x1b]0;pwned\\x07');
    expect(out).toContain('\\x1b]52;c;aGk=\\x07 out');
    expect(out).toContain('WARNING: bad \\x9b31m');
    expect(out).toContain('ERROR: failed \\x1b[8m');
  });

  it('escapes control bytes in table cells', () => {
    expect(formatTable([['ID', 'DESCRIPTION'], ['x', 'RUN \x1b[31m']])).toBe('ID  DESCRIPTION\nx   RUN \\x1b[31m\n');
  });
});
