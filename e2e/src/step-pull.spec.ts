import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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
  let stages: string;
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
    // Two parallel stages, each with a RUN another build leaves cached on one worker and a RUN that runs every time (its ARG changes).
    stages = mkdtempSync(join(work, 'stages-'));
    writeFileSync(
      join(stages, 'Dockerfile'),
      ['FROM ' + base + ' AS a', 'RUN sleep 1; date +%s%N > /a', 'ARG N', 'RUN echo "a$N" > /na', 'FROM ' + base + ' AS b', 'RUN sleep 1; date +%s%N > /b', 'ARG N', 'RUN echo "b$N" > /nb', 'FROM ' + base, 'COPY --from=a /a /na /', 'COPY --from=b /b /nb /', ''].join('\n'),
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

  it('runs two parallel stages of one build on the two workers their cache is on, both CACHED, the image exported with both', async () => {
    const opsLike = (id: string, text: string) => worker(id).logs().split('\n').filter((l) => l.includes('"running op"') && l.includes(text)).length;
    const stage = (target: string, id: string) =>
      runKiln(['build', '--addr', cluster.addr, '--progress=plain', '--target', target, '--worker-filter', `id==${id}`, '--build-arg', 'N=1', '-o', `type=local,dest=${join(work, `out-${target}`)}`, stages], { env: cluster.env, timeoutMs: 60_000 });
    const a = await stage('a', 'w-a');
    expect(a.code, onFailure(a)).toBe(0);
    const b = await stage('b', 'w-b');
    expect(b.code, onFailure(b)).toBe(0);
    const before = { a: opsLike('w-a', '> /na'), b: opsLike('w-b', '> /nb') };

    const ref = `${registry.host}/kiln/pulled:stages`;
    const full = await runKiln(['build', '--addr', cluster.addr, '--progress=plain', '--build-arg', 'N=2', '--push', '--provenance=false', '-t', ref, stages], { env: cluster.env, timeoutMs: 60_000 });
    expect(full.code, onFailure(full)).toBe(0);
    expect(stepOutcome(full.stderr, /RUN sleep 1; date \+%s%N > \/a$/)).toBe('CACHED');
    expect(stepOutcome(full.stderr, /RUN sleep 1; date \+%s%N > \/b$/)).toBe('CACHED');
    // Each stage's new step ran where its cached step is: the stages went to different workers.
    expect(opsLike('w-a', '> /na') - before.a).toBe(1);
    expect(opsLike('w-b', '> /nb') - before.b).toBe(1);
    expect(opsLike('w-a', '> /nb') + opsLike('w-b', '> /na')).toBe(0);
    expect(worker('solver-1').logs()).toContain('build steps placed on several workers');

    const files = imageFiles(ref, join(work, 'image-stages'));
    expect(files('a')).toBe(readFileSync(join(work, 'out-a', 'a'), 'utf8'));
    expect(files('b')).toBe(readFileSync(join(work, 'out-b', 'b'), 'utf8'));
    expect(files('na')).toBe('a2\n');
    expect(files('nb')).toBe('b2\n');
  }, 150_000);
});

/** The image at `ref` unpacked (skopeo to an OCI layout, layers applied in order) into `dir`: a reader of its files. */
function imageFiles(ref: string, dir: string): (path: string) => string {
  const layout = `${dir}-layout`;
  execFileSync('skopeo', ['copy', '--src-tls-verify=false', `docker://${ref}`, `oci:${layout}:img`], { stdio: 'pipe' });
  const blob = (digest: string) => join(layout, 'blobs', 'sha256', digest.slice('sha256:'.length));
  const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
  const manifest = JSON.parse(readFileSync(blob(index.manifests[0]!.digest), 'utf8')) as { layers: { digest: string }[] };
  mkdirSync(dir, { recursive: true });
  for (const l of manifest.layers) execFileSync('tar', ['-xf', blob(l.digest), '-C', dir], { stdio: 'pipe' });
  return (path) => readFileSync(join(dir, path), 'utf8');
}

/** The plain-progress outcome of the step whose name matches `name`: CACHED, DONE (it ran) or ERROR. */
function stepOutcome(stderr: string, name: RegExp): 'CACHED' | 'DONE' | 'ERROR' | undefined {
  const lines = stderr.split('\n');
  const head = lines.map((l) => /^#(\d+) (.*)$/.exec(l)).find((m) => m && name.test(m[2]!));
  if (!head) return undefined;
  const outcome = lines.map((l) => new RegExp(`^#${head[1]} (CACHED|DONE|ERROR)\\b`).exec(l)).find(Boolean);
  return outcome?.[1] as 'CACHED' | 'DONE' | 'ERROR' | undefined;
}
