import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushBusyboxImage, runKiln, startKilnd, startRegistry, type Kilnd, type TestRegistry, e2eWorker } from '@kiln/testkit';

/** The `cache miss: STEP: REASON` lines (or the "none" line) `--explain-cache` and `history explain` print. */
function misses(stderr: string): string[] {
  return stderr.split('\n').filter((l) => l.startsWith('cache miss'));
}

describe(`kiln build --explain-cache: why each step missed the cache [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let registry: TestRegistry;
  let daemon: Kilnd;
  let ctx: string;
  let base: string;
  let n = 0;
  const dockerfile = (run2: string) => [`FROM ${base}`, 'ARG VERSION=1', 'COPY a.txt /a.txt', 'RUN echo "v$VERSION" > /v.txt', run2, ''].join('\n');

  beforeAll(async () => {
    registry = await startRegistry();
    ctx = mkdtempSync(join(tmpdir(), 'kiln-explain-'));
    base = (await pushBusyboxImage(registry, ctx, 'kiln/explain', 'base', { applets: ['sh', 'echo', 'cat'] })).ref;
    writeFileSync(join(ctx, 'a.txt'), 'a1\n');
    writeFileSync(join(ctx, 'unrelated.txt'), 'u1\n');
    writeFileSync(join(ctx, 'Dockerfile'), dockerfile('RUN cat /a.txt > /copy.txt'));
    daemon = await startKilnd();
  }, 60_000);

  afterAll(async () => {
    await daemon?.stop();
    await registry?.stop();
    if (ctx) rmSync(ctx, { recursive: true, force: true });
  });

  /** One build through the real CLI (`--pull`: the base tag is looked up every time); returns its stderr and history ref. */
  async function build(version: string, progress = 'plain'): Promise<{ stderr: string; ref: string }> {
    const out = join(ctx, `out-${++n}`);
    const meta = join(ctx, `meta-${n}.json`);
    const res = await runKiln(['build', '--addr', daemon.addr, `--progress=${progress}`, '--pull', '--explain-cache', '--build-arg', `VERSION=${version}`, '--metadata-file', meta, '-o', `type=local,dest=${out}`, ctx]);
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
    const ref = (JSON.parse(readFileSync(meta, 'utf8')) as Record<string, string>)['buildx.build.ref']!.split('/').pop()!;
    rmSync(out, { recursive: true, force: true });
    return { stderr: res.stderr, ref };
  }

  it('names the changed file, build arg, base digest and Dockerfile line; an unread file changes nothing', async () => {
    const first = await build('1');
    expect(misses(first.stderr)).toEqual([
      expect.stringMatching(/^cache miss: \[1\/4\] FROM .*kiln\/explain:base.*: first build of this step$/),
      'cache miss: [2/4] COPY a.txt /a.txt: first build of this step',
      'cache miss: [3/4] RUN echo "v1" > /v.txt: first build of this step',
      'cache miss: [4/4] RUN cat /a.txt > /copy.txt: first build of this step',
    ]);

    // 1. One context file the COPY reads.
    writeFileSync(join(ctx, 'a.txt'), 'a2\n');
    const file = await build('1');
    expect(misses(file.stderr)).toEqual([
      'cache miss: [2/4] COPY a.txt /a.txt: context files changed: a.txt (changed)',
      'cache miss: [3/4] RUN echo "v1" > /v.txt: parent step changed: [2/4] COPY a.txt /a.txt',
      'cache miss: [4/4] RUN cat /a.txt > /copy.txt: parent step changed: [3/4] RUN echo "v1" > /v.txt',
    ]);
    // The same lines after the fact, from the history.
    const explained = await runKiln(['history', 'explain', '--addr', daemon.addr, file.ref]);
    expect(explained.code, explained.stderr).toBe(0);
    expect(misses(explained.stdout)).toEqual(misses(file.stderr));

    // 2. A build arg (as in BuildKit, every RUN after the ARG has it in its environment).
    const arg = await build('2');
    expect(misses(arg.stderr)).toEqual([
      'cache miss: [3/4] RUN echo "v2" > /v.txt: build arg or ENV changed: VERSION: "1" → "2"',
      'cache miss: [4/4] RUN cat /a.txt > /copy.txt: build arg or ENV changed: VERSION: "1" → "2"',
    ]);

    // 3. The base image tag moved in the registry (another layer).
    const moved = await pushBusyboxImage(registry, ctx, 'kiln/explain', 'base', { applets: ['sh', 'echo', 'cat', 'ls'] });
    const image = await build('2');
    const imageMisses = misses(image.stderr);
    expect(imageMisses[0]).toMatch(new RegExp(`^cache miss: \\[1/4\\] FROM .*: base image ${base.replace(/[.]/g, '\\.')}: sha256:[0-9a-f]{64} → ${moved.manifestDigest}$`));
    expect(imageMisses.slice(1)).toEqual([
      expect.stringMatching(/^cache miss: \[2\/4\] COPY a.txt \/a.txt: parent step changed: \[1\/4\] FROM /),
      'cache miss: [3/4] RUN echo "v2" > /v.txt: parent step changed: [2/4] COPY a.txt /a.txt',
      'cache miss: [4/4] RUN cat /a.txt > /copy.txt: parent step changed: [3/4] RUN echo "v2" > /v.txt',
    ]);

    // 4. A Dockerfile line; the same explanation in --progress=rawjson's vertex JSON.
    writeFileSync(join(ctx, 'Dockerfile'), dockerfile('RUN cat /a.txt /a.txt > /copy.txt'));
    const line = await build('2', 'rawjson');
    const reason = 'Dockerfile line changed: RUN cat /a.txt > /copy.txt → RUN cat /a.txt /a.txt > /copy.txt';
    expect(misses(line.stderr)).toEqual([`cache miss: [4/4] RUN cat /a.txt /a.txt > /copy.txt: ${reason}`]);
    const vertices = line.stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .flatMap((l) => ((JSON.parse(l) as { vertexes?: { name: string; cached?: boolean; cacheMiss?: string }[] }).vertexes ?? []));
    expect(vertices.filter((v) => v.cacheMiss).map((v) => [v.name, v.cacheMiss])).toEqual([['[4/4] RUN cat /a.txt /a.txt > /copy.txt', reason]]);
    expect(vertices.some((v) => v.cached && v.cacheMiss)).toBe(false);

    // 5. A file no COPY reads: every step cached, nothing to explain.
    writeFileSync(join(ctx, 'unrelated.txt'), 'u2\n');
    const unrelated = await build('2');
    expect(misses(unrelated.stderr)).toEqual(['cache misses: none (every step came from the cache)']);
    expect(unrelated.stderr).toMatch(/CACHED/);
  }, 120_000);
});
