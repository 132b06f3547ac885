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

/** Per step of a `--progress=plain` log (by its Dockerfile text, e.g. "COPY a.txt /a"): whether it was reported CACHED. */
function cachedSteps(plain: string): Map<string, boolean> {
  const names = new Map<string, string>();
  const cached = new Set<string>();
  for (const line of plain.split('\n')) {
    const named = /^#(\d+) \[(?:[^\]]* )?\d+\/\d+\] (.*)$/.exec(line);
    if (named) names.set(named[1]!, named[2]!);
    const hit = /^#(\d+) CACHED$/.exec(line);
    if (hit) cached.add(hit[1]!);
  }
  return new Map([...names].map(([n, name]) => [name, cached.has(n)]));
}

describe(`cache keys from the files each COPY reads [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let root: string;
  let ctx: string;
  let daemon: Kilnd | undefined;
  let n = 0;
  const RUN1 = 'RUN ["/bin/busybox", "sh", "-c", "/bin/busybox head -c 16 /dev/urandom | /bin/busybox od -An -tx1 > /r1"]';
  const RUN2 = 'RUN ["/bin/busybox", "sh", "-c", "/bin/busybox head -c 16 /dev/urandom | /bin/busybox od -An -tx1 > /r2"]';

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'kiln-copykeys-root-'));
    ctx = mkdtempSync(join(tmpdir(), 'kiln-copykeys-ctx-'));
    copyFileSync(BUSYBOX, join(ctx, 'busybox'));
    writeFileSync(join(ctx, 'a.txt'), 'a1\n');
    writeFileSync(join(ctx, 'b.txt'), 'b1\n');
    writeFileSync(join(ctx, 'c.txt'), 'c1\n');
    writeFileSync(join(ctx, 'Dockerfile'), ['FROM scratch', 'COPY --chmod=0755 busybox /bin/busybox', 'COPY a.txt /a', RUN1, 'COPY b.txt /b', RUN2, ''].join('\n'));
    daemon = await startKilnd({ root });
  });
  afterAll(async () => {
    await daemon?.stop();
    rmSync(root, { recursive: true, force: true });
    rmSync(ctx, { recursive: true, force: true });
  });

  async function build(): Promise<{ cached: Map<string, boolean>; r1: string; r2: string; b: string; execs: number }> {
    const out = join(ctx, `out-${++n}`);
    const before = execRuns(daemon!.logs());
    const res = await runKiln(['build', '--addr', daemon!.addr, '--progress=plain', '-o', `type=local,dest=${out}`, ctx]);
    expect(res.code, `${res.stderr}\n${daemon!.logs().slice(-4000)}`).toBe(0);
    const result = {
      cached: cachedSteps(res.stderr),
      r1: readFileSync(join(out, 'r1'), 'utf8'),
      r2: readFileSync(join(out, 'r2'), 'utf8'),
      b: readFileSync(join(out, 'b'), 'utf8'),
      execs: execRuns(daemon!.logs()) - before,
    };
    rmSync(out, { recursive: true, force: true });
    return result;
  }

  it('reruns only the steps after the COPY whose files changed; mtimes and unread files change nothing', async () => {
    const first = await build();
    expect(first.execs).toBe(2);
    expect([...first.cached.values()].some(Boolean)).toBe(false);

    // b.txt is read by the second COPY only: the first COPY and RUN stay cached.
    writeFileSync(join(ctx, 'b.txt'), 'b2\n');
    const bChanged = await build();
    expect(bChanged.execs).toBe(1);
    expect(Object.fromEntries(bChanged.cached)).toEqual({
      'COPY --chmod=0755 busybox /bin/busybox': true,
      'COPY a.txt /a': true,
      [RUN1]: true,
      'COPY b.txt /b': false,
      [RUN2]: false,
    });
    expect(bChanged.r1).toBe(first.r1);
    expect(bChanged.r2).not.toBe(first.r2);
    expect(bChanged.b).toBe('b2\n');

    // Touching a.txt (mtime only) and changing c.txt, which no step reads: everything cached.
    utimesSync(join(ctx, 'a.txt'), 1_000_000, 1_000_000);
    const touched = await build();
    expect(touched.execs).toBe(0);
    expect([...touched.cached.values()].every(Boolean)).toBe(true);
    expect(touched.r2).toBe(bChanged.r2);
    writeFileSync(join(ctx, 'c.txt'), 'c2\n');
    const unread = await build();
    expect(unread.execs).toBe(0);
    expect([...unread.cached.values()].every(Boolean)).toBe(true);
    expect(unread.cached.size).toBe(5);

    // Changing a.txt reruns everything from its COPY on (later steps build on its result).
    writeFileSync(join(ctx, 'a.txt'), 'a2\n');
    const aChanged = await build();
    expect(aChanged.execs).toBe(2);
    expect(aChanged.cached.get('COPY --chmod=0755 busybox /bin/busybox')).toBe(true);
    expect(aChanged.cached.get('COPY a.txt /a')).toBe(false);
    expect(aChanged.r1).not.toBe(first.r1);
  }, 240_000);
});
