import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitForWorkers, pushBusyboxImage, runKiln, startKilnCluster, startKilnNats, startRegistry, type DaemonProcess, type KilnCluster, type KilnNats, type RunResult, type TestRegistry } from '@kiln/testkit';

/**
 * A step's result moves between workers (issue 15, "within a build"): a
 * project built on w-a, then built on w-b, takes its RUN steps' results
 * from w-a through the content tier (GetLayers there, ImportLayers here)
 * instead of running them, and the image pushed from w-b has the very
 * layers of the one pushed from w-a (the RUNs write a timestamp: a rerun
 * would make other layers).
 */
describe('step results pulled from another worker [topology=split, two oci workers]', () => {
  let nats: KilnNats;
  let cluster: KilnCluster;
  let registry: TestRegistry;
  let work: string;
  let ctx: string;
  const worker = (id: string): DaemonProcess => cluster.tiers.find((t) => t.name === id)!;
  /** How many times a worker's log shows a sleeping RUN starting. */
  const sleepsRun = (id: string) => worker(id).logs().split('\n').filter((l) => l.includes('"running op"') && l.includes('sleep 1')).length;
  const pulls = () => worker('solver-1').logs().split('\n').filter((l) => l.includes('step result pulled from another worker instead of running it'));
  const onFailure = (res: RunResult) => `exit ${res.code}\nstderr:\n${res.stderr}\ncluster logs:\n${cluster.logs().slice(-8000)}`;
  const buildOn = (id: string, tag: string) =>
    // --provenance=false: the bare image manifest whose layers are compared (a push gets buildx's default provenance otherwise).
    runKiln(['build', '--addr', cluster.addr, '--progress=plain', '--worker-filter', `id==${id}`, '--push', '--provenance=false', '-t', `${registry.host}/kiln/pulled:${tag}`, ctx], { env: cluster.env, timeoutMs: 60_000 });
  const layersOf = (tag: string) => {
    const raw = execFileSync('skopeo', ['inspect', '--tls-verify=false', '--raw', `docker://${registry.host}/kiln/pulled:${tag}`], { encoding: 'utf8' });
    return (JSON.parse(raw) as { layers: { digest: string }[] }).layers.map((l) => l.digest);
  };

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'kiln-step-pull-'));
    registry = await startRegistry();
    const base = (await pushBusyboxImage(registry, work, 'kiln/pull-base', 'base')).ref;
    ctx = mkdtempSync(join(work, 'ctx-'));
    writeFileSync(
      join(ctx, 'Dockerfile'),
      ['FROM ' + base, 'RUN sleep 1; date +%s%N > /one', 'RUN sleep 1; date +%s%N > /two', ''].join('\n'),
    );
    nats = await startKilnNats();
    cluster = await startKilnCluster(nats, ['solver', 'frontend', 'exporters', 'content', { tier: 'worker-oci', id: 'w-a' }, { tier: 'worker-oci', id: 'w-b' }]).catch(async (err) => {
      await nats.stop();
      throw err;
    });
    await waitForWorkers(cluster, ['w-a', 'w-b']);
  }, 90_000);

  afterAll(async () => {
    await cluster?.stop();
    await nats?.stop();
    await registry?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('builds on w-b from the RUN results w-a holds, pulled not run, with the same layer digests', async () => {
    const first = await buildOn('w-a', 'a');
    expect(first.code, onFailure(first)).toBe(0);
    expect(sleepsRun('w-a')).toBe(2);

    const second = await buildOn('w-b', 'b');
    expect(second.code, onFailure(second)).toBe(0);
    expect(stepOutcome(second.stderr, /RUN sleep 1; date \+%s%N > \/one/)).toBe('CACHED');
    expect(stepOutcome(second.stderr, /RUN sleep 1; date \+%s%N > \/two/)).toBe('CACHED');
    expect(sleepsRun('w-b')).toBe(0);
    expect(pulls().filter((l) => l.includes('"from":"w-a"') && l.includes('"to":"w-b"'))).toHaveLength(2);
    const a = layersOf('a');
    expect(a.length).toBeGreaterThanOrEqual(3);
    expect(layersOf('b')).toEqual(a);

    // The results now live on w-b: built there again, they are its own cache, nothing moves.
    const third = await buildOn('w-b', 'b2');
    expect(third.code, onFailure(third)).toBe(0);
    expect(stepOutcome(third.stderr, /RUN sleep 1; date \+%s%N > \/two/)).toBe('CACHED');
    expect(pulls()).toHaveLength(2);
    expect(sleepsRun('w-b')).toBe(0);
    expect(layersOf('b2')).toEqual(a);
  }, 120_000);
});

/** The plain-progress outcome of the step whose name matches `name`: CACHED, DONE (it ran) or ERROR. */
function stepOutcome(stderr: string, name: RegExp): 'CACHED' | 'DONE' | 'ERROR' | undefined {
  const lines = stderr.split('\n');
  const head = lines.map((l) => /^#(\d+) (.*)$/.exec(l)).find((m) => m && name.test(m[2]!));
  if (!head) return undefined;
  const outcome = lines.map((l) => new RegExp(`^#${head[1]} (CACHED|DONE|ERROR)\\b`).exec(l)).find(Boolean);
  return outcome?.[1] as 'CACHED' | 'DONE' | 'ERROR' | undefined;
}
