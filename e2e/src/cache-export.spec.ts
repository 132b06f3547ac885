import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runKiln, startKilnd, startRegistry, type Kilnd, type TestRegistry, e2eWorker } from '@kiln/testkit';

const BUSYBOX = '/bin/busybox';
const RUNS = 3;

/** Exec ops a daemon ran, from its debug log ("running op" with kind "exec"). */
function execRuns(logs: string): number {
  return logs.split('\n').filter((l) => l.includes('"msg":"running op"') && l.includes('"kind":"exec"')).length;
}

/**
 * Cache export and import across daemons: daemon A builds and exports its
 * cache; daemon B, on an empty root, imports it and every RUN is reported
 * CACHED and never executed. Each RUN writes random bytes, so identical
 * output files also prove no RUN ran again.
 */
describe(`cache export/import across daemons [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let work: string;
  let ctx: string;
  let registry: TestRegistry;
  let n = 0;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'kiln-cache-export-'));
    ctx = join(work, 'ctx');
    mkdirSync(ctx);
    copyFileSync(BUSYBOX, join(ctx, 'busybox'));
    writeFileSync(join(ctx, 'a.txt'), 'from the context\n');
    writeFileSync(
      join(ctx, 'Dockerfile'),
      [
        'FROM scratch',
        'COPY --chmod=0755 busybox /bin/busybox',
        'RUN ["/bin/busybox", "sh", "-c", "/bin/busybox --install -s /bin && head -c 16 /dev/urandom | od -An -tx1 > /rand-1"]',
        'COPY a.txt /a.txt',
        'RUN head -c 16 /dev/urandom | od -An -tx1 > /rand-2 && cat /a.txt >> /rand-2',
        'RUN head -c 16 /dev/urandom | od -An -tx1 > /rand-3 && rm /a.txt',
        '',
      ].join('\n'),
    );
    registry = await startRegistry();
  });
  afterAll(async () => {
    await registry?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  interface Built {
    stderr: string;
    files: Record<string, string>;
    execs: number;
    layers: string[];
  }

  /** The image manifest of a tag: a push carries buildx's default provenance, so the tag is an index whose first entry is the image. */
  async function imageManifest(repo: string, tag: string): Promise<unknown> {
    const accept = 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json';
    const top = (await (await fetch(`${registry.url}/v2/${repo}/manifests/${tag}`, { headers: { accept } })).json()) as { manifests?: { digest: string }[] };
    if (!top.manifests) return top;
    return (await fetch(`${registry.url}/v2/${repo}/manifests/${top.manifests[0]!.digest}`, { headers: { accept } })).json();
  }

  async function build(daemon: Kilnd, image: string, ...flags: string[]): Promise<Built> {
    const out = join(work, `out-${++n}`);
    const before = execRuns(daemon.logs());
    const res = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', ...flags, '-o', `type=local,dest=${out}`, '-o', `type=image,name=${image},push=true`, ctx]);
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
    const files: Record<string, string> = {};
    for (const f of ['rand-1', 'rand-2', 'rand-3']) files[f] = readFileSync(join(out, f), 'utf8');
    expect(existsSync(join(out, 'a.txt'))).toBe(false);
    rmSync(out, { recursive: true, force: true });
    const [repo, tag] = image.slice(registry.host.length + 1).split(':');
    const manifest = (await imageManifest(repo!, tag!)) as { layers: { digest: string }[] };
    return { stderr: res.stderr, files, execs: execRuns(daemon.logs()) - before, layers: manifest.layers.map((l) => l.digest) };
  }

  /** Builds on a fresh daemon A with `exportFlags`, then on a fresh daemon B with `importFlags`. */
  async function roundTrip(name: string, exportFlags: string[], importFlags: string[]): Promise<{ a: Built; b: Built }> {
    const daemonA = await startKilnd();
    let a: Built;
    try {
      a = await build(daemonA, `${registry.host}/kiln/${name}:a`, ...exportFlags);
      expect(a.execs).toBe(RUNS);
    } finally {
      await daemonA.stop();
    }
    const daemonB = await startKilnd();
    try {
      const b = await build(daemonB, `${registry.host}/kiln/${name}:b`, ...importFlags);
      expect(b.execs, daemonB.logs().slice(-4000)).toBe(0);
      expect(b.files).toEqual(a.files);
      expect(b.layers).toEqual(a.layers);
      const runLines = b.stderr.match(/#\d+ \[[^\]]*\] RUN [^\n]*\n#\d+ [A-Z]+/g) ?? [];
      // The result's step comes from the import by its definition key, so the
      // steps below it need not be shown at all; every RUN shown is CACHED.
      expect(runLines.length, b.stderr).toBeGreaterThanOrEqual(1);
      expect(runLines.length, b.stderr).toBeLessThanOrEqual(RUNS);
      expect(runLines.some((l) => l.includes(`/rand-${RUNS}`)), b.stderr).toBe(true);
      for (const l of runLines) expect(l).toMatch(/CACHED$/);
      return { a, b };
    } finally {
      await daemonB.stop();
    }
  }

  it('type=registry,mode=max: daemon B imports every RUN from the registry', async () => {
    const ref = `${registry.host}/kiln/cache:latest`;
    await roundTrip('reg', ['--cache-to', `type=registry,ref=${ref},mode=max`], ['--cache-from', `type=registry,ref=${ref}`]);
    // BuildKit's default form: an index listing the layer blobs and the cache config.
    const index = (await (await fetch(`${registry.url}/v2/kiln/cache/manifests/latest`, { headers: { accept: 'application/vnd.oci.image.index.v1+json' } })).json()) as { manifests: { mediaType: string }[] };
    expect(index.manifests.filter((m) => m.mediaType === 'application/vnd.kiln.cache.config.v0+json')).toHaveLength(1);
    expect(index.manifests.length).toBeGreaterThan(RUNS);
  }, 240_000);

  it('type=local,image-manifest=true: an OCI layout written by A is read by B', async () => {
    const dir = join(work, 'local-cache');
    await roundTrip('local', ['--cache-to', `type=local,dest=${dir},mode=max,image-manifest=true`], ['--cache-from', `type=local,src=${dir}`]);
    const index = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as { manifests: { mediaType: string; digest: string; annotations: Record<string, string> }[] };
    expect(index.manifests.map((m) => [m.mediaType, m.annotations['org.opencontainers.image.ref.name']])).toEqual([['application/vnd.oci.image.manifest.v1+json', 'latest']]);
    const manifest = JSON.parse(readFileSync(join(dir, 'blobs', 'sha256', index.manifests[0]!.digest.slice(7)), 'utf8')) as { config: { mediaType: string } };
    expect(manifest.config.mediaType).toBe('application/vnd.kiln.cache.config.v0+json');
    expect(readFileSync(join(dir, 'oci-layout'), 'utf8')).toContain('imageLayoutVersion');
  }, 240_000);

  it('type=inline: B uses the pushed image of A as its cache', async () => {
    await roundTrip('inline', ['--cache-to', 'type=inline'], ['--cache-from', `${registry.host}/kiln/inline:a`]);
    const config = (await imageManifest('kiln/inline', 'a')) as { config: { digest: string } };
    const image = (await (await fetch(`${registry.url}/v2/kiln/inline/blobs/${config.config.digest}`)).json()) as Record<string, { records: unknown[] }>;
    expect(image['kiln.cache.v0']!.records.length).toBeGreaterThanOrEqual(RUNS);
  }, 240_000);
});


/**
 * mode=min (the default) with a multi-stage build: the result's layers come
 * from COPY --from of a stage whose RUN writes random bytes. Daemon B must
 * take the result from the cache by its definition key, without running the
 * stage (its RUN's layers are not in a min cache).
 */
describe(`cache export/import, mode=min across stages [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let work: string;
  let registry: TestRegistry;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'kiln-cache-min-'));
    registry = await startRegistry();
  });
  afterAll(async () => {
    await registry?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('type=local and type=registry: B skips the stage RUN; the result is A\'s', async () => {
    const ctx = join(work, 'ctx');
    mkdirSync(ctx);
    copyFileSync(BUSYBOX, join(ctx, 'busybox'));
    writeFileSync(join(ctx, 'foo'), 'foobar');
    writeFileSync(
      join(ctx, 'Dockerfile'),
      [
        'FROM scratch AS base',
        'COPY --chmod=0755 busybox /bin/busybox',
        'COPY foo /const',
        'RUN ["/bin/busybox", "sh", "-c", "/bin/busybox head -c 16 /dev/urandom | /bin/busybox od -An -tx1 > /unique"]',
        'FROM scratch',
        'COPY --from=base /const /',
        'COPY --from=base /unique /',
        '',
      ].join('\n'),
    );
    const ref = `${registry.host}/kiln/min-cache:latest`;
    for (const [to, from] of [
      [`type=local,dest=${join(work, 'cache')}`, `type=local,src=${join(work, 'cache')}`],
      [`type=registry,ref=${ref}`, `type=registry,ref=${ref}`],
    ] as const) {
      const outs: string[] = [];
      for (const flags of [['--cache-to', to], ['--cache-from', from]]) {
        const daemon = await startKilnd();
        try {
          const out = join(work, `out-${outs.length}-${to.slice(5, 10)}`);
          const before = execRuns(daemon.logs());
          const res = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', ...flags, '-o', `type=local,dest=${out}`, ctx]);
          expect(res.code, `${res.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
          if (flags[0] === '--cache-from') expect(execRuns(daemon.logs()) - before, res.stderr).toBe(0);
          expect(readFileSync(join(out, 'const'), 'utf8')).toBe('foobar');
          outs.push(readFileSync(join(out, 'unique'), 'utf8'));
        } finally {
          await daemon.stop();
        }
      }
      expect(outs[1]).toBe(outs[0]);
    }
  }, 240_000);
});
