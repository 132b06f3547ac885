import { copyFileSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runKiln, startKilnd, type Kilnd, e2eWorker } from '@kiln/testkit';

const BUSYBOX = '/bin/busybox';

/** Exec ops the daemon ran, from its debug log ("running op" with kind "exec"). */
function execRuns(logs: string): number {
  return logs.split('\n').filter((l) => l.includes('"msg":"running op"') && l.includes('"kind":"exec"')).length;
}

describe(`persistent build cache [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let root: string;
  let ctx: string;
  let daemon: Kilnd | undefined;
  let n = 0;

  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'kiln-cache-root-'));
    ctx = mkdtempSync(join(tmpdir(), 'kiln-cache-ctx-'));
    copyFileSync(BUSYBOX, join(ctx, 'busybox'));
    writeFileSync(join(ctx, 'a.txt'), 'first\n');
    writeFileSync(join(ctx, 'unread.txt'), 'never copied\n');
    writeFileSync(
      join(ctx, 'Dockerfile'),
      [
        'FROM scratch AS base',
        'COPY --chmod=0755 busybox /bin/busybox',
        'RUN ["/bin/busybox", "sh", "-c", "/bin/busybox --install -s /bin && head -c 16 /dev/urandom | od -An -tx1 > /base-rand"]',
        'FROM base AS final',
        'COPY a.txt /a.txt',
        'RUN head -c 16 /dev/urandom | od -An -tx1 > /final-rand && cat /a.txt >> /final-rand',
        '',
      ].join('\n'),
    );
  });
  afterAll(async () => {
    await daemon?.stop();
    rmSync(root, { recursive: true, force: true });
    rmSync(ctx, { recursive: true, force: true });
  });

  async function build(...flags: string[]): Promise<{ stderr: string; base: string; final: string; execs: number }> {
    const out = join(ctx, `out-${++n}`);
    const before = execRuns(daemon!.logs());
    const res = await runKiln(['build', '--addr', daemon!.addr, '--progress=plain', ...flags, '-o', `type=local,dest=${out}`, ctx]);
    expect(res.code, `${res.stderr}\n${daemon!.logs().slice(-4000)}`).toBe(0);
    const result = {
      stderr: res.stderr,
      base: readFileSync(join(out, 'base-rand'), 'utf8'),
      final: readFileSync(join(out, 'final-rand'), 'utf8'),
      execs: execRuns(daemon!.logs()) - before,
    };
    rmSync(out, { recursive: true, force: true });
    return result;
  }

  it('reuses every step after a daemon restart, survives mtime changes, reruns on content changes and --no-cache', async () => {
    daemon = await startKilnd({ root });
    const first = await build();
    expect(first.execs).toBe(2);
    await daemon.stop();

    daemon = await startKilnd({ root });
    const again = await build();
    expect(again.execs).toBe(0);
    expect(again.base).toBe(first.base);
    expect(again.final).toBe(first.final);
    expect(again.stderr).toMatch(/\[final 2\/2\] RUN head[^\n]*\n#\d+ CACHED/);
    expect(again.stderr).not.toMatch(/#\d+ DONE[^\n]*\n[^#]*RUN/);

    // Touching files (and changing ones no step reads) keeps the cache.
    utimesSync(join(ctx, 'a.txt'), 1_000_000, 1_000_000);
    writeFileSync(join(ctx, 'unread.txt'), 'changed but still never copied\n');
    const touched = await build();
    expect(touched.execs).toBe(0);
    expect(touched.final).toBe(first.final);

    // Changing a copied file reruns the steps after the COPY that reads it (not the base stage's, which reads busybox only).
    writeFileSync(join(ctx, 'a.txt'), 'second\n');
    const changed = await build();
    expect(changed.execs).toBe(1);
    expect(changed.base).toBe(first.base);
    expect(changed.final).toMatch(/second\n$/);

    // --no-cache-filter reruns one stage's steps; --no-cache reruns all.
    const filtered = await build('--no-cache-filter', 'final');
    expect(filtered.execs).toBe(1);
    expect(filtered.base).toBe(changed.base);
    expect(filtered.final).not.toBe(changed.final);
    const none = await build('--no-cache');
    expect(none.execs).toBe(2);
    expect(none.base).not.toBe(changed.base);
  }, 180_000);
});

/** The plain-progress outcome of the step whose name matches `name`: CACHED, DONE (it ran) or ERROR. */
function stepOutcome(stderr: string, name: RegExp): 'CACHED' | 'DONE' | 'ERROR' | undefined {
  const lines = stderr.split('\n');
  const head = lines.map((l) => /^#(\d+) (.*)$/.exec(l)).find((m) => m && name.test(m[2]!));
  if (!head) return undefined;
  const outcome = lines.map((l) => new RegExp(`^#${head[1]} (CACHED|DONE|ERROR)\\b`).exec(l)).find(Boolean);
  return outcome?.[1] as 'CACHED' | 'DONE' | 'ERROR' | undefined;
}

describe(`--no-cache and --no-cache-filter [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let ctx: string;
  let daemon: Kilnd | undefined;
  let n = 0;
  const S0 = /^\[s0 \d+\/\d+\] RUN cat/;
  const S1 = /^\[s1 \d+\/\d+\] RUN cat/;
  const COUNT = /^\[final \d+\/\d+\] RUN --mount=type=cache/;

  beforeAll(async () => {
    ctx = mkdtempSync(join(tmpdir(), 'kiln-no-cache-ctx-'));
    copyFileSync(BUSYBOX, join(ctx, 'busybox'));
    writeFileSync(
      join(ctx, 'Dockerfile'),
      [
        'FROM scratch AS base',
        'COPY --chmod=0755 busybox /bin/busybox',
        'RUN ["/bin/busybox", "sh", "-c", "/bin/busybox --install -s /bin"]',
        'FROM base AS s0',
        'RUN cat /proc/sys/kernel/random/uuid > /s0',
        'FROM base AS s1',
        'RUN cat /proc/sys/kernel/random/uuid > /s1',
        'FROM base AS final',
        'ARG FOO=abc',
        // BuildKit's testCacheMountModeNoCache: the step counts what the cache mount holds.
        'RUN --mount=type=cache,target=/cache,mode=0773 touch /cache/$FOO && ls /cache | wc -l > /count',
        'COPY --from=s0 /s0 /s0',
        'COPY --from=s1 /s1 /s1',
        '',
      ].join('\n'),
    );
    daemon = await startKilnd();
  });
  afterAll(async () => {
    await daemon?.stop();
    rmSync(ctx, { recursive: true, force: true });
  });

  async function build(...flags: string[]): Promise<{ stderr: string; s0: string; s1: string; count: string; execs: number }> {
    const out = join(ctx, `out-${++n}`);
    const before = execRuns(daemon!.logs());
    const res = await runKiln(['build', '--addr', daemon!.addr, '--progress=plain', ...flags, '-o', `type=local,dest=${out}`, ctx]);
    expect(res.code, `${res.stderr}\n${daemon!.logs().slice(-4000)}`).toBe(0);
    const read = (f: string) => readFileSync(join(out, f), 'utf8').trim();
    const result = { stderr: res.stderr, s0: read('s0'), s1: read('s1'), count: read('count'), execs: execRuns(daemon!.logs()) - before };
    rmSync(out, { recursive: true, force: true });
    return result;
  }

  it('reruns every step with --no-cache (cache mounts start empty), only the named stage with --no-cache-filter, and prints CACHED for the rest', async () => {
    const first = await build();
    expect(first.execs).toBe(4);
    expect(first.count).toBe('1');

    const cached = await build();
    expect(cached.execs).toBe(0);
    expect([cached.s0, cached.s1]).toEqual([first.s0, first.s1]);
    for (const step of [S0, S1, COUNT]) expect(stepOutcome(cached.stderr, step), cached.stderr).toBe('CACHED');

    const filtered = await build('--no-cache-filter', 's1');
    expect(filtered.execs).toBe(1);
    expect(filtered.s0).toBe(first.s0);
    expect(filtered.s1).not.toBe(first.s1);
    expect(stepOutcome(filtered.stderr, S1), filtered.stderr).toBe('DONE');
    expect(stepOutcome(filtered.stderr, S0), filtered.stderr).toBe('CACHED');
    expect(stepOutcome(filtered.stderr, COUNT), filtered.stderr).toBe('CACHED');

    // Every step runs, and the cache mount starts empty: it holds only this build's file.
    const none = await build('--no-cache', '--build-arg', 'FOO=def');
    expect(none.execs).toBe(4);
    expect(none.s0).not.toBe(filtered.s0);
    expect(none.s1).not.toBe(filtered.s1);
    expect(none.count).toBe('1');
    for (const step of [S0, S1, COUNT]) expect(stepOutcome(none.stderr, step), none.stderr).toBe('DONE');

    // Without --no-cache the cache mount keeps what the last run left.
    const after = await build('--build-arg', 'FOO=ghi');
    expect(after.execs).toBe(1);
    expect(after.count).toBe('2');
  }, 240_000);
});
