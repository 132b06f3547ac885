import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitForWorkers, runKiln, startKilnCluster, startKilnNats, type DaemonProcess, type KilnNats, type KilnCluster, type RunResult, e2eWorker, e2eWorkerTier } from '@kiln/testkit';

/**
 * A cluster with two workers (OCI, or containerd with KILN_E2E_WORKER) labelled pool=a and pool=b: `--worker-filter`
 * routes builds, and a build whose worker was killed runs on the other one.
 */
describe(`worker choice [topology=split, two ${e2eWorker()} workers]`, () => {
  let nats: KilnNats;
  let cluster: KilnCluster;
  let ctx: string;
  let out: string;
  const worker = (id: string): DaemonProcess => cluster.tiers.find((t) => t.name === id)!;
  /** How many ops a worker process has run so far (its debug log has one "running op" line per op). */
  const opsRun = (id: string) => worker(id).logs().split('\n').filter((l) => l.includes('"running op"')).length;
  const build = (args: string[]) => runKiln(['build', '--addr', cluster.addr, '--progress=plain', '-o', `type=local,dest=${out}`, ...args, ctx], { env: cluster.env });
  const onFailure = (res: RunResult) => `exit ${res.code}\nstderr:\n${res.stderr}\ncluster logs:\n${cluster.logs().slice(-8000)}`;

  beforeAll(async () => {
    nats = await startKilnNats();
    cluster = await startKilnCluster(nats, [
      'solver',
      'frontend',
      'exporters',
      'content',
      { tier: e2eWorkerTier(), id: 'worker-a', args: ['--worker-label', 'pool=a'] },
      { tier: e2eWorkerTier(), id: 'worker-b', args: ['--worker-label', 'pool=b'] },
    ]).catch(async (err) => {
      await nats.stop();
      throw err;
    });
    ctx = mkdtempSync(join(tmpdir(), 'kiln-ctx-'));
    out = mkdtempSync(join(tmpdir(), 'kiln-out-'));
    writeFileSync(join(ctx, 'hello.txt'), 'hello\n');
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM scratch\nCOPY hello.txt /\n');
    // Both workers are in the solver's directory before the first build.
    await waitForWorkers(cluster, ['worker-a', 'worker-b']);
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
    await nats?.stop();
    rmSync(ctx, { recursive: true, force: true });
    rmSync(out, { recursive: true, force: true });
  });

  it('lists the workers with their labels and filters them', async () => {
    const res = await runKiln(['workers', '--addr', cluster.addr, '--filter', 'labels.pool==b'], { env: cluster.env });
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toMatch(/worker-b\s+\S+\s+.*pool=b/);
    expect(res.stdout).not.toContain('worker-a');
  });

  it('routes a build to the worker --worker-filter names', async () => {
    const [a0, b0] = [opsRun('worker-a'), opsRun('worker-b')];
    const toB = await build(['--worker-filter', 'labels.pool==b']);
    expect(toB.code, onFailure(toB)).toBe(0);
    expect(readFileSync(join(out, 'hello.txt'), 'utf8')).toBe('hello\n');
    expect(opsRun('worker-b')).toBeGreaterThan(b0);
    expect(opsRun('worker-a')).toBe(a0);

    const toA = await build(['--worker-filter', 'id==worker-a']);
    expect(toA.code, onFailure(toA)).toBe(0);
    expect(opsRun('worker-a')).toBeGreaterThan(a0);

    const none = await build(['--worker-filter', 'labels.pool==c']);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/no worker matches --worker-filter labels.pool==c \(workers: worker-a \{.*pool=a.*\}; worker-b \{.*pool=b.*\}\)/);
  });

  it('runs the build on the other worker when its worker was killed, with a warning naming both', async () => {
    // Killed without leaving: the directory still lists worker-a (the idle worker with the lowest id) for a few seconds.
    await worker('worker-a').kill();
    const b0 = opsRun('worker-b');
    rmSync(join(out, 'hello.txt'));
    const res = await build([]);
    expect(res.code, onFailure(res)).toBe(0);
    expect(readFileSync(join(out, 'hello.txt'), 'utf8')).toBe('hello\n');
    expect(opsRun('worker-b')).toBeGreaterThan(b0);
    expect(res.stderr).toMatch(/WARNING: worker "worker-a" was lost \(.*\); retrying the build on worker "worker-b"/);
  });
});
