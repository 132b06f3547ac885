import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runKiln, startKilnCluster, startKilnNats, type KilnCluster, type KilnNats, type RunResult, e2eWorker, e2eWorkerTier } from '@kiln/testkit';

// A base with no registry: Debian's static busybox copied in from the context.
const BUSYBOX = '/bin/busybox';
/**
 * How long NATS stays down. The design holds for 60 s and more (tiers
 * reconnect forever; the directory keeps what it knew while it hears
 * nobody; the solver records its build events itself); the suite uses a
 * few seconds to stay fast. `KILN_NATS_OUTAGE_MS=60000` runs the case.
 */
const OUTAGE_MS = Number(process.env['KILN_NATS_OUTAGE_MS'] ?? 6000);
/** The RUN ticks once a second for longer than the outage, so some ticks are printed while NATS is down. */
const TICKS = Math.ceil(OUTAGE_MS / 1000) + 4;

/**
 * NATS down during a build (issue 15, "Survives faults"): the build
 * finishes, the step output the worker sent during the outage reaches the
 * client once NATS is back (the worker keeps it and stores it in the
 * JetStream stream KILN_EVENTS, which the solver reads), and the history
 * records the build as completed with its steps (never left `running`).
 */
describe(`NATS outage during a build [topology=split, worker=${e2eWorker()}]`, () => {
  let nats: KilnNats;
  let cluster: KilnCluster;
  let ctx: string;
  let out: string;
  const kiln = (...args: string[]) => runKiln([args[0]!, '--addr', cluster.addr, ...args.slice(1)], { env: cluster.env, timeoutMs: OUTAGE_MS + 90_000 });
  const onFailure = (res: RunResult) => `exit ${res.code}\nstderr:\n${res.stderr}\ncluster logs:\n${cluster.logs().slice(-8000)}`;

  beforeAll(async () => {
    nats = await startKilnNats();
    cluster = await startKilnCluster(nats, ['solver', 'frontend', 'exporters', 'content', e2eWorkerTier()]).catch(async (err) => {
      await nats.stop();
      throw err;
    });
    ctx = mkdtempSync(join(tmpdir(), 'kiln-outage-'));
    out = mkdtempSync(join(tmpdir(), 'kiln-outage-out-'));
    copyFileSync(BUSYBOX, join(ctx, 'busybox'));
    writeFileSync(
      join(ctx, 'Dockerfile'),
      [
        'FROM scratch',
        'COPY --chmod=0755 busybox /bin/busybox',
        `RUN ["/bin/busybox", "sh", "-c", "i=1; while [ $i -le ${TICKS} ]; do echo tick-$i; /bin/busybox sleep 1; i=$((i+1)); done; echo ticked > /ticks.txt"]`,
        'RUN ["/bin/busybox", "sh", "-c", "echo after > /after.txt"]',
        '',
      ].join('\n'),
    );
    const deadline = Date.now() + 20_000;
    for (;;) {
      const res = await kiln('workers');
      if (res.stdout.includes(`${e2eWorkerTier()}-1`)) break;
      if (Date.now() > deadline) throw new Error(`the worker was never listed:\n${res.stdout}${res.stderr}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
    await nats?.stop();
    rmSync(ctx, { recursive: true, force: true });
    rmSync(out, { recursive: true, force: true });
  });

  it(`finishes the build, catches up the progress and completes the history (outage ${OUTAGE_MS} ms)`, async () => {
    const worker = cluster.tiers.find((t) => t.name === `${e2eWorkerTier()}-1`)!;
    const running = kiln('build', '--progress=plain', '-o', `type=local,dest=${out}`, ctx);
    const deadline = Date.now() + 60_000;
    while (!worker.logs().includes('tick-$i')) {
      if (Date.now() > deadline) throw new Error(`the ticking step never started\n${cluster.logs().slice(-6000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    await nats.outage(OUTAGE_MS);
    const res = await running;
    expect(res.code, onFailure(res)).toBe(0);
    expect(readFileSync(join(out, 'ticks.txt'), 'utf8')).toBe('ticked\n');
    expect(readFileSync(join(out, 'after.txt'), 'utf8')).toBe('after\n');
    // Every line the step printed reached the client, those from the outage included, in order.
    const ticks = [...res.stderr.matchAll(/tick-(\d+)/g)].map((m) => Number(m[1]));
    expect(ticks).toEqual(Array.from({ length: TICKS }, (_, i) => i + 1));

    const records = await history();
    expect(records.map((r) => r.status)).toEqual(['completed']);
    expect(records[0]!.total_steps).toBeGreaterThanOrEqual(3);
    // The build events went through JetStream: the solver made the stream in the server's store.
    expect(existsSync(join(nats.storeDir!, 'jetstream', '$G', 'streams', 'KILN_EVENTS'))).toBe(true);
  }, OUTAGE_MS + 120_000);

  it(`a step that ends while NATS is down: its output reaches the client once NATS is back (outage ${OUTAGE_MS} ms)`, async () => {
    // Prints for ~2 s after the outage began, then the build ends while NATS is still down.
    const ctx2 = join(ctx, 'short');
    mkdirSync(ctx2);
    copyFileSync(BUSYBOX, join(ctx2, 'busybox'));
    writeFileSync(
      join(ctx2, 'Dockerfile'),
      [
        'FROM scratch',
        'COPY --chmod=0755 busybox /bin/busybox',
        'RUN ["/bin/busybox", "sh", "-c", "echo armed; /bin/busybox sleep 1; for i in 1 2 3 4; do echo outage-line-$i; /bin/busybox sleep 0.5; done; echo short > /short.txt"]',
        '',
      ].join('\n'),
    );
    const worker = cluster.tiers.find((t) => t.name === `${e2eWorkerTier()}-1`)!;
    const out2 = join(out, 'short');
    const running = kiln('build', '--progress=plain', '-o', `type=local,dest=${out2}`, ctx2);
    const deadline = Date.now() + 60_000;
    while (!worker.logs().includes('outage-line-$i')) {
      if (Date.now() > deadline) throw new Error(`the step never started\n${cluster.logs().slice(-6000)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const outage = nats.outage(OUTAGE_MS);
    const res = await running;
    await outage;
    expect(res.code, onFailure(res)).toBe(0);
    expect(readFileSync(join(out2, 'short.txt'), 'utf8')).toBe('short\n');
    // Printed while NATS was down, after which the step and the build ended: the solver waited for it.
    const lines = [...res.stderr.matchAll(/outage-line-(\d)/g)].map((m) => Number(m[1]));
    expect(lines, onFailure(res)).toEqual([1, 2, 3, 4]);
    const records = await history();
    expect(records.map((r) => r.status)).toEqual(['completed', 'completed']);
    expect(cluster.logs()).toContain("waited for workers' progress to catch up after a NATS outage");
  }, OUTAGE_MS + 120_000);

  async function history(): Promise<{ status: string; total_steps: number }[]> {
    const ls = await runKiln(['history', 'ls', '--addr', cluster.addr, '--format', 'json'], { env: cluster.env });
    expect(ls.code, ls.stderr).toBe(0);
    return ls.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as { status: string; total_steps: number });
  }
});
