import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runKiln, startKilnd, type Kilnd, e2eWorker } from '@kiln/testkit';

interface RawStatus {
  vertexes?: { digest: string; name?: string; cached?: boolean; started?: string; completed?: string; error?: string }[];
  logs?: { vertex: string; msg: string }[];
}

describe(`kiln build --progress through kilnd [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let daemon: Kilnd;
  let ctx: string;
  beforeAll(async () => {
    daemon = await startKilnd();
    ctx = mkdtempSync(join(tmpdir(), 'kiln-progress-'));
    copyFileSync('/bin/busybox', join(ctx, 'busybox'));
    writeFileSync(
      join(ctx, 'Dockerfile'),
      ['FROM scratch', 'COPY --chmod=0755 busybox /bin/busybox', 'RUN ["/bin/busybox", "sh", "-c", "echo first line; echo second line >&2"]', ''].join('\n'),
    );
  }, 60_000);
  afterAll(async () => {
    await daemon?.stop();
    rmSync(ctx, { recursive: true, force: true });
  });

  it('plain prints numbered steps, timed log lines and DONE; rawjson replays the same build as cached JSON objects', async () => {
    const plain = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', ctx]);
    expect(plain.code, `${plain.stderr}\n${daemon.logs().slice(-3000)}`).toBe(0);
    const run = /#(\d+) \[(?:stage-0 )?2\/2\] RUN \["\/bin\/busybox", "sh", "-c", "echo first line; echo second line >&2"\]\n/.exec(plain.stderr);
    expect(run, plain.stderr).not.toBeNull();
    const n = run![1];
    expect(plain.stderr).toMatch(new RegExp(`#${n} \\d+\\.\\d{3} first line\\n`));
    expect(plain.stderr).toMatch(new RegExp(`#${n} \\d+\\.\\d{3} second line\\n`));
    expect(plain.stderr).toMatch(new RegExp(`#${n} DONE \\d+\\.\\ds\\n`));
    expect(plain.stderr).toMatch(/#1 \[internal\] load build definition from Dockerfile\n(#1 .*\n)*#1 DONE \d+\.\ds\n/);

    const raw = await runKiln(['build', '--addr', daemon.addr, '--progress=rawjson', ctx]);
    expect(raw.code, raw.stderr).toBe(0);
    const objects = raw.stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as RawStatus);
    const vertexes = objects.flatMap((o) => o.vertexes ?? []);
    const runStep = vertexes.filter((v) => /\[(?:stage-0 )?2\/2\] RUN/.test(v.name ?? ''));
    expect(runStep.some((v) => v.cached === true && v.completed !== undefined)).toBe(true);
    expect(vertexes.every((v) => /^sha256:[0-9a-f]{64}$/.test(v.digest))).toBe(true);
    // Cached: the step did not run again, so it logged nothing.
    expect(objects.flatMap((o) => o.logs ?? []).filter((l) => runStep.some((v) => v.digest === l.vertex))).toEqual([]);
  });

  it('tty draws frames in place and ends with the FINISHED frame', async () => {
    // A step that runs for a second (never cached: the build arg changes every run) makes the
    // printer redraw several times, each redraw moving the cursor up over the previous frame.
    const slow = join(ctx, 'Slow.Dockerfile');
    writeFileSync(slow, ['FROM scratch', 'COPY --chmod=0755 busybox /bin/busybox', 'ARG NONCE', 'RUN ["/bin/busybox", "sh", "-c", "echo $NONCE; sleep 1"]', ''].join('\n'));
    const args = ['build', '--addr', daemon.addr, '--progress=tty', '-f', slow, '--build-arg', `NONCE=${Date.now()}`, ctx];
    const res = await runKiln(args);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).toMatch(/\x1b\[\d+A/);
    const last = res.stderr.slice(res.stderr.lastIndexOf('[+] Building'));
    expect(last).toMatch(/^\[\+\] Building \d+\.\ds \((\d+)\/\1\) FINISHED/);
    expect(last).toMatch(/ => \[(?:stage-0 )?\d\/\d\] RUN .* \d+\.\ds/);
    expect(last).toMatch(/ => CACHED \[(?:stage-0 )?\d\/\d\] COPY .* 0\.0s/);
  });
});

describe(`kiln history through kilnd, across a restart [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let root: string;
  let ctx: string;
  let daemon: Kilnd | undefined;
  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'kiln-history-root-'));
    ctx = mkdtempSync(join(tmpdir(), 'kiln-history-'));
    copyFileSync('/bin/busybox', join(ctx, 'busybox'));
    writeFileSync(join(ctx, 'Dockerfile'), ['FROM scratch', 'COPY --chmod=0755 busybox /bin/busybox', 'RUN ["/bin/busybox", "sh", "-c", "echo kept in history"]', ''].join('\n'));
    writeFileSync(join(ctx, 'Bad.Dockerfile'), ['FROM scratch', 'COPY --chmod=0755 busybox /bin/busybox', 'RUN ["/bin/busybox", "sh", "-c", "echo about to fail; exit 7"]', ''].join('\n'));
  });
  afterAll(async () => {
    await daemon?.stop();
    rmSync(root, { recursive: true, force: true });
    rmSync(ctx, { recursive: true, force: true });
  });

  it('lists, inspects, replays and removes build records; they survive a daemon restart', async () => {
    daemon = await startKilnd({ root });
    const kiln = (...args: string[]) => runKiln([args[0]!, ...(args[0] === 'history' ? [args[1]!, '--addr', daemon!.addr, ...args.slice(2)] : ['--addr', daemon!.addr, ...args.slice(1)])]);
    expect((await kiln('build', '--progress=quiet', ctx)).code).toBe(0);
    expect((await kiln('build', '--progress=quiet', ctx)).code).toBe(0);
    const bad = await kiln('build', '--progress=quiet', '-f', join(ctx, 'Bad.Dockerfile'), ctx);
    expect(bad.code).toBe(1);
    expect(bad.stderr).not.toContain('#1 ');

    const json = await kiln('history', 'ls', '--format', 'json');
    expect(json.code, json.stderr).toBe(0);
    const records = json.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as { ref: string; status: string; total_steps: number; cached_steps: number; cache_hit_ratio: number; error?: string; name: string });
    expect(records.map((r) => r.status)).toEqual(['error', 'completed', 'completed']);
    const [failed, cached, first] = records as [(typeof records)[0], (typeof records)[0], (typeof records)[0]];
    expect(failed.error).toMatch(/exit code: 7/);
    expect(failed.name).toBe('Bad.Dockerfile');
    expect(first.cached_steps).toBe(0);
    expect(cached.cached_steps).toBe(2);
    expect(cached.total_steps).toBeGreaterThanOrEqual(4);
    expect(cached.cache_hit_ratio).toBeCloseTo(2 / cached.total_steps, 2);

    const table = await kiln('history', 'ls');
    expect(table.stdout.split('\n')[0]).toMatch(/^BUILD ID\s+NAME\s+STATUS\s+CREATED AT\s+DURATION$/);
    expect(table.stdout).toMatch(new RegExp(`${failed.ref}\\s+Bad.Dockerfile\\s+Error\\s+\\d+ seconds? ago\\s+\\d+\\.\\ds`));

    await daemon.stop();
    daemon = await startKilnd({ root });

    const inspect = await kiln('history', 'inspect', cached.ref.slice(0, 12));
    expect(inspect.code, inspect.stderr).toBe(0);
    expect(inspect.stdout).toMatch(/Status:\s+Completed\n/);
    expect(inspect.stdout).toMatch(/Duration:\s+\d+\.\ds\n/);
    expect(inspect.stdout).toContain(`Build Steps:  ${cached.total_steps}/${cached.total_steps} (${Math.round((200 / cached.total_steps))}% cached)`);
    const inspectFailed = await kiln('history', 'inspect');
    expect(inspectFailed.stdout).toMatch(/Status:\s+Error\n/);
    expect(inspectFailed.stdout).toMatch(/Error:\s+.*exit code: 7/);

    const logs = await kiln('history', 'logs', first.ref);
    expect(logs.code, logs.stderr).toBe(0);
    expect(logs.stdout).toMatch(/#\d+ \[(?:stage-0 )?2\/2\] RUN .*\n#\d+ \d+\.\d{3} kept in history\n#\d+ DONE \d+\.\ds\n/);
    const failedLogs = await kiln('history', 'logs', failed.ref);
    expect(failedLogs.stdout).toMatch(/#\d+ \d+\.\d{3} about to fail\n#\d+ ERROR: .*exit code: 7/);

    const rm = await kiln('history', 'rm', first.ref);
    expect(rm.stdout).toBe(`${first.ref}\n`);
    const gone = await kiln('history', 'inspect', first.ref);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toContain(`ERROR: no build "${first.ref}" in the history`);
    expect((await kiln('history', 'ls', '--format', 'json')).stdout.trimEnd().split('\n')).toHaveLength(2);
  }, 180_000);
});
