import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushBusyboxImage, runKiln, startKilnd, startRegistry, type Kilnd, type TestRegistry, e2eWorker } from '@kiln/testkit';

/** Exec ops the daemon ran, from its debug log ("running op" with kind "exec"). */
function execRuns(logs: string): number {
  return logs.split('\n').filter((l) => l.includes('"msg":"running op"') && l.includes('"kind":"exec"')).length;
}

/** Docker's default bounding set: what a step gets without `--security=insecure`. */
const DEFAULT_CAPBND = '00000000a80425fb';

/*
 * Hole 5 of the security review: a result built with an entitlement must
 * never reach a build that was not granted it — not from the solver's
 * persistent cache, not from the worker's memory, not after a restart on a
 * daemon that permits nothing. The refusal comes before any step runs.
 */
describe(`entitlements are not bypassed by the cache [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let registry: TestRegistry;
  let work: string;
  let root: string;
  let ctx: string;
  let daemon: Kilnd | undefined;
  let n = 0;

  beforeAll(async () => {
    registry = await startRegistry();
    work = mkdtempSync(join(tmpdir(), 'kiln-entitlement-cache-'));
    const base = (await pushBusyboxImage(registry, work, 'kiln/busybox', '1')).ref;
    root = join(work, 'root');
    ctx = join(work, 'ctx');
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'Dockerfile'), `FROM ${base}\nRUN --security=insecure cat /proc/self/status > /status\n`);
  }, 60_000);

  afterAll(async () => {
    await daemon?.stop();
    await registry?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  async function build(...flags: string[]): Promise<{ code: number; stderr: string; out: string; execs: number }> {
    const out = join(work, `out-${++n}`);
    const before = execRuns(daemon!.logs());
    const res = await runKiln(['build', '--addr', daemon!.addr, '--progress=plain', ...flags, '-o', `type=local,dest=${out}`, ctx]);
    return { code: res.code, stderr: res.stderr, out, execs: execRuns(daemon!.logs()) - before };
  }

  /** The build failed with `message`, ran no step and wrote nothing. */
  function expectRefused(r: Awaited<ReturnType<typeof build>>, message: RegExp): void {
    expect(r.code, r.stderr).not.toBe(0);
    expect(r.stderr).toMatch(message);
    expect(r.execs).toBe(0);
    expect(existsSync(r.out)).toBe(false);
  }

  it('refuses a cached insecure step to a build without --allow, in memory, with --no-cache and after a restart', async () => {
    daemon = await startKilnd({ root, args: ['--allow-insecure-entitlement', 'security.insecure'] });
    const entitled = await build('--allow', 'security.insecure');
    expect(entitled.code, `${entitled.stderr}\n${daemon.logs().slice(-3000)}`).toBe(0);
    expect(entitled.execs).toBe(1);
    const capbnd = /CapBnd:\s*([0-9a-f]+)/.exec(readFileSync(join(entitled.out, 'status'), 'utf8'))?.[1];
    expect(capbnd).toBeDefined();
    expect(capbnd).not.toBe(DEFAULT_CAPBND);

    // The same Dockerfile without --allow: the solver cache holds the step's result.
    expectRefused(await build(), /security\.insecure is not allowed/);
    // --no-cache sends the step to the worker, which ran the identical op a moment ago.
    expectRefused(await build('--no-cache'), /security\.insecure is not allowed/);
    // The entitled build still gets its cached result.
    const again = await build('--allow', 'security.insecure');
    expect(again.code, again.stderr).toBe(0);
    expect(again.execs).toBe(0);
    expect(again.stderr).toMatch(/RUN --security=insecure[^\n]*\n#\d+ CACHED/);

    // Restarted on the same state with no entitlements permitted: the cache survives, the grant does not.
    await daemon.stop();
    daemon = await startKilnd({ root });
    expectRefused(await build(), /security\.insecure is not allowed/);
    expectRefused(await build('--allow', 'security.insecure'), /granting entitlement security\.insecure is not allowed by build daemon configuration/);
  }, 180_000);
});
