import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runKiln, startKilnd, type Kilnd } from '@kiln/testkit';

interface RawStatus {
  vertexes?: { digest: string; name?: string; cached?: boolean; started?: string; completed?: string; error?: string }[];
  logs?: { vertex: string; msg: string }[];
}

describe('kiln build --progress through kilnd [topology=all-in-one, worker=oci]', () => {
  let daemon: Kilnd;
  let ctx: string;
  beforeAll(async () => {
    daemon = await startKilnd({ worker: 'oci' });
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
    const res = await runKiln(['build', '--addr', daemon.addr, '--progress=tty', ctx]);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).toMatch(/\x1b\[\d+A/);
    const last = res.stderr.slice(res.stderr.lastIndexOf('[+] Building'));
    expect(last).toMatch(/^\[\+\] Building \d+\.\ds \((\d+)\/\1\) FINISHED/);
    expect(last).toMatch(/ => CACHED \[(?:stage-0 )?2\/2\] RUN .* 0\.0s/);
  });
});
