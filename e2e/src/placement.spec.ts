import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitForWorkers, pushBusyboxImage, runKiln, startKilnCluster, startKilnNats, startRegistry, type DaemonProcess, type KilnCluster, type KilnNats, type RunResult, type TestRegistry } from '@kiln/testkit';

/**
 * Two OCI workers: w-a (the lower id) refuses http sources (`--worker-disable-op
 * source:http`), w-b runs every kind. Op kinds decide where a build can go;
 * among the workers that can, the build goes where its cached steps are.
 */
describe('placement by op kinds and by cache [topology=split, two oci workers]', () => {
  let nats: KilnNats;
  let cluster: KilnCluster;
  let registry: TestRegistry;
  let files: Server;
  let work: string;
  let base: string;
  const worker = (id: string): DaemonProcess => cluster.tiers.find((t) => t.name === id)!;
  /** How many ops a worker process has run so far (its debug log has one "running op" line per op). */
  const opsRun = (id: string) => worker(id).logs().split('\n').filter((l) => l.includes('"running op"')).length;
  const build = (ctx: string, args: string[] = []) =>
    runKiln(['build', '--addr', cluster.addr, '--progress=plain', '-o', `type=local,dest=${join(ctx, 'out')}`, ...args, ctx], { env: cluster.env });
  const onFailure = (res: RunResult) => `exit ${res.code}\nstderr:\n${res.stderr}\ncluster logs:\n${cluster.logs().slice(-6000)}`;
  const project = (name: string, dockerfile: string[], extra: Record<string, string> = {}) => {
    const dir = mkdtempSync(join(work, `${name}-`));
    writeFileSync(join(dir, 'Dockerfile'), [...dockerfile, ''].join('\n'));
    for (const [f, body] of Object.entries(extra)) writeFileSync(join(dir, f), body);
    return dir;
  };

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'kiln-placement-'));
    registry = await startRegistry();
    base = (await pushBusyboxImage(registry, work, 'kiln/placement', 'base')).ref;
    files = createServer((_req, res) => res.end('fetched over http\n'));
    await new Promise<void>((r) => files.listen(0, '127.0.0.1', r));
    nats = await startKilnNats();
    cluster = await startKilnCluster(nats, [
      'solver',
      'frontend',
      'exporters',
      'content',
      { tier: 'worker-oci', id: 'w-a', args: ['--worker-disable-op', 'source:http'] },
      { tier: 'worker-oci', id: 'w-b' },
    ]).catch(async (err) => {
      await nats.stop();
      throw err;
    });
    await waitForWorkers(cluster, ['w-a', 'w-b']);
  }, 90_000);

  afterAll(async () => {
    await cluster?.stop();
    await nats?.stop();
    await registry?.stop();
    files?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it('lists each worker\'s executor and op kinds', async () => {
    const res = await runKiln(['workers', '--addr', cluster.addr], { env: cluster.env });
    expect(res.code, res.stderr).toBe(0);
    const line = (id: string) => res.stdout.split('\n').find((l) => l.startsWith(id)) ?? '';
    expect(line('w-a')).toMatch(/\srunc\s.*exec,file,merge,source:\{local,docker-image,oci-layout,https,git\}$/);
    expect(line('w-b')).toMatch(/source:\{local,docker-image,oci-layout,http,https,git\}$/);
    const verbose = await runKiln(['workers', '--addr', cluster.addr, '-v', '--filter', 'id==w-a'], { env: cluster.env });
    expect(verbose.stdout).toMatch(/Executor:\s+runc/);
    expect(verbose.stdout).toMatch(/Ops:\s+exec, file, merge, source:local, source:docker-image, source:oci-layout, source:https, source:git\n/);
  });

  it('places an ADD of an http URL only on the worker that runs http sources; naming the step when none does', async () => {
    const url = `http://127.0.0.1:${(files.address() as AddressInfo).port}/data.txt`;
    const ctx = project('http', ['FROM scratch', `ADD ${url} /data.txt`]);
    const [a0, b0] = [opsRun('w-a'), opsRun('w-b')];
    const res = await build(ctx);
    expect(res.code, onFailure(res)).toBe(0);
    expect(readFileSync(join(ctx, 'out', 'data.txt'), 'utf8')).toBe('fetched over http\n');
    expect(opsRun('w-b')).toBeGreaterThan(b0);
    expect(opsRun('w-a')).toBe(a0);

    const refused = await build(ctx, ['--worker-filter', 'id==w-a']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/no worker matching --worker-filter id==w-a runs source:http steps \(workers run: w-a: exec, file, merge, source:local, [^)]*\)/);
    expect(refused.stderr).toMatch(/Dockerfile:2/);
    expect(opsRun('w-a')).toBe(a0);
  }, 60_000);

  it('rebuilds an edited project on the worker holding its cached steps, though the other worker is idle and has the lower id; after a prune, by load again', async () => {
    const ctx = project('app', ['FROM ' + base, 'RUN echo one > /one', 'RUN echo two > /two', 'COPY app.txt /'], { 'app.txt': 'v1\n' });
    const first = await build(ctx, ['--worker-filter', 'id==w-b']);
    expect(first.code, onFailure(first)).toBe(0);

    // An edit at the end: the FROM and both RUNs are the same steps.
    writeFileSync(join(ctx, 'app.txt'), 'v2\n');
    const a0 = opsRun('w-a');
    const again = await build(ctx);
    expect(again.code, onFailure(again)).toBe(0);
    expect(readFileSync(join(ctx, 'out', 'app.txt'), 'utf8')).toBe('v2\n');
    expect(opsRun('w-a')).toBe(a0);
    expect(stepOutcome(again.stderr, /RUN echo one/)).toBe('CACHED');
    expect(stepOutcome(again.stderr, /RUN echo two/)).toBe('CACHED');
    expect(stepOutcome(again.stderr, /COPY app.txt/)).toBe('DONE');
    expect(worker('solver-1').logs()).toMatch(/"worker":"w-b","cachedSteps":2,"workMs":0,"load":0/);

    // Prune drops the cache index's entries: no worker holds the steps, the idle lowest id wins.
    const prune = await runKiln(['prune', '--addr', cluster.addr, '-f'], { env: cluster.env });
    expect(prune.code, prune.stderr).toBe(0);
    writeFileSync(join(ctx, 'app.txt'), 'v3\n');
    const pruned = await build(ctx);
    expect(pruned.code, onFailure(pruned)).toBe(0);
    expect(opsRun('w-a')).toBeGreaterThan(a0);
    expect(stepOutcome(pruned.stderr, /RUN echo one/)).toBe('DONE');
  }, 90_000);

  it('keeps a project on the worker holding its cache while that worker runs two more builds than the idle one', async () => {
    const steps = [1, 2, 3, 4].map((n) => `RUN sleep 0.2 && echo ${n} > /${n}`);
    const ctx = project('sticky', ['FROM ' + base, ...steps]);
    const first = await build(ctx, ['--worker-filter', 'id==w-b']);
    expect(first.code, onFailure(first)).toBe(0);

    // Two builds of another project hold w-b while the project is built again.
    const busy = project('busy', ['FROM ' + base, 'RUN sleep 5 && echo busy > /busy']);
    const sleeping = () => worker('w-b').logs().split('\n').filter((l) => l.includes('"running op"') && l.includes('sleep 5')).length;
    const s0 = sleeping();
    const background = [1, 2].map(() => build(busy, ['--worker-filter', 'id==w-b', '--no-cache']));
    const until = Date.now() + 30_000;
    while (sleeping() < s0 + 2 && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
    expect(sleeping()).toBe(s0 + 2);

    // Its steps on w-a would be 4 pulls, shared with nothing: (200 + 4 × 150) ms; on w-b nothing to run, shared with 2 builds: 200 × 3 ms.
    const a0 = opsRun('w-a');
    const again = await build(ctx);
    expect(again.code, onFailure(again)).toBe(0);
    for (const n of [1, 2, 3, 4]) expect(stepOutcome(again.stderr, new RegExp(`RUN sleep 0.2 && echo ${n} `))).toBe('CACHED');
    expect(opsRun('w-a')).toBe(a0);
    expect(worker('solver-1').logs()).toMatch(/"worker":"w-b","cachedSteps":4,"workMs":0,"load":2/);
    for (const res of await Promise.all(background)) expect(res.code, onFailure(res)).toBe(0);
  }, 90_000);
});

/** The plain-progress outcome of the step whose name matches `name`: CACHED, DONE (it ran) or ERROR. */
function stepOutcome(stderr: string, name: RegExp): 'CACHED' | 'DONE' | 'ERROR' | undefined {
  const lines = stderr.split('\n');
  const head = lines.map((l) => /^#(\d+) (.*)$/.exec(l)).find((m) => m && name.test(m[2]!));
  if (!head) return undefined;
  const outcome = lines.map((l) => new RegExp(`^#${head[1]} (CACHED|DONE|ERROR)\\b`).exec(l)).find(Boolean);
  return outcome?.[1] as 'CACHED' | 'DONE' | 'ERROR' | undefined;
}
