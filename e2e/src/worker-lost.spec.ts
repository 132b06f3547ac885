import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitForWorkers, runKiln, startKilnCluster, startKilnNats, type DaemonProcess, type KilnCluster, type KilnNats, type RunResult, e2eWorker, e2eWorkerTier } from '@kiln/testkit';

// A base with no registry: Debian's static busybox copied in from the context.
const BUSYBOX = '/bin/busybox';

/**
 * A worker SIGKILLed in the middle of a RUN (issue 15, "Survives faults"):
 * the step and the ones after it run again on the other worker, the build
 * succeeds and its progress warns naming the lost worker. With no other
 * worker left, the build fails with a message naming the lost one.
 */
describe(`worker lost mid-step [topology=split, two ${e2eWorker()} workers]`, () => {
  let nats: KilnNats;
  let cluster: KilnCluster;
  let ctx: string;
  let out: string;
  const worker = (id: string): DaemonProcess => cluster.tiers.find((t) => t.name === id)!;
  const build = (tag: string) => runKiln(['build', '--addr', cluster.addr, '--progress=plain', '--build-arg', `TAG=${tag}`, '-o', `type=local,dest=${out}`, ctx], { env: cluster.env, timeoutMs: 90_000 });
  const onFailure = (res: RunResult) => `exit ${res.code}\nstderr:\n${res.stderr}\ncluster logs:\n${cluster.logs().slice(-8000)}`;
  /** How many times a worker's log shows the sleeping step starting. */
  const sleeps = (id: string) => worker(id).logs().split('\n').filter((l) => l.includes('"running op"') && l.includes('sleep 5')).length;
  let survivor = '';

  async function waitFor<T>(what: string, check: () => T | undefined, timeoutMs = 30_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = check();
      if (v !== undefined) return v;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${cluster.logs().slice(-6000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  beforeAll(async () => {
    nats = await startKilnNats();
    cluster = await startKilnCluster(nats, ['solver', 'frontend', 'exporters', 'content', { tier: e2eWorkerTier(), id: 'worker-a' }, { tier: e2eWorkerTier(), id: 'worker-b' }]).catch(async (err) => {
      await nats.stop();
      throw err;
    });
    ctx = mkdtempSync(join(tmpdir(), 'kiln-lost-'));
    out = mkdtempSync(join(tmpdir(), 'kiln-lost-out-'));
    copyFileSync(BUSYBOX, join(ctx, 'busybox'));
    writeFileSync(
      join(ctx, 'Dockerfile'),
      [
        'FROM scratch',
        'COPY --chmod=0755 busybox /bin/busybox',
        'ARG TAG',
        'RUN ["/bin/busybox", "sh", "-c", "echo before-$TAG > /before.txt"]',
        'RUN ["/bin/busybox", "sh", "-c", "/bin/busybox sleep 5; echo slept-$TAG > /slept.txt"]',
        'RUN ["/bin/busybox", "sh", "-c", "echo after-$TAG > /after.txt"]',
        '',
      ].join('\n'),
    );
    await waitForWorkers(cluster, ['worker-a', 'worker-b']);
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
    await nats?.stop();
    rmSync(ctx, { recursive: true, force: true });
    rmSync(out, { recursive: true, force: true });
  });

  it('reruns the interrupted step and the ones after it on the other worker, warning with the lost worker', async () => {
    const running = build('one');
    const victim = await waitFor('the sleep step to start on a worker', () => ['worker-a', 'worker-b'].find((id) => sleeps(id) > 0));
    survivor = victim === 'worker-a' ? 'worker-b' : 'worker-a';
    await worker(victim).kill();
    const res = await running;
    expect(res.code, onFailure(res)).toBe(0);
    expect(readFileSync(join(out, 'before.txt'), 'utf8')).toBe('before-one\n');
    expect(readFileSync(join(out, 'slept.txt'), 'utf8')).toBe('slept-one\n');
    expect(readFileSync(join(out, 'after.txt'), 'utf8')).toBe('after-one\n');
    expect(res.stderr).toMatch(new RegExp(`WARNING: worker "${victim}" was lost \\(.*\\); retrying the build on worker "${survivor}"`));
    expect(sleeps(survivor)).toBe(1);
    expect(worker(survivor).logs()).toContain('after-');
  }, 100_000);

  it('fails naming the lost worker when no other worker can take the build', async () => {
    const running = build('two');
    const victim = survivor;
    await waitFor('the sleep step to start on the last worker', () => (sleeps(victim) > 1 ? true : undefined));
    await worker(victim).kill();
    const res = await running;
    expect(res.code, onFailure(res)).toBe(1);
    expect(res.stderr).toMatch(new RegExp(`worker "${victim}" .*lost`));
    // Every error line names the worker: never a bare transport message.
    const errors = res.stderr.split('\n').filter((l) => /ERROR: /.test(l));
    expect(errors.length).toBeGreaterThan(0);
    for (const line of errors) expect(line).toMatch(new RegExp(`ERROR: worker "${victim}" `));
  }, 100_000);
});
