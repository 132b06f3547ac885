import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findDockerd, findRegistry, kilnBin, makeTar, pushBusyboxImage, runKiln, startDockerd, startKilnd, startRegistry, type Kilnd, type TestDockerd, type TestRegistry, e2eWorker } from '@kiln/testkit';

const has = (bin: string) => spawnSync('sh', ['-c', `command -v ${bin}`]).status === 0;
const canRun = process.getuid?.() === 0 && !!findRegistry() && existsSync('/bin/busybox') && has('runc');

/** bin/kiln with `input` on stdin. */
function kilnWithStdin(args: string[], input: Buffer | string): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(kilnBin(), args, { input, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

describe.skipIf(!canRun)(`kiln build flags buildx users type [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let registry: TestRegistry;
  let daemon: Kilnd;
  let work: string;
  let ctx: string;
  let baseRef: string;

  beforeAll(async () => {
    registry = await startRegistry();
    work = mkdtempSync(join(tmpdir(), 'kiln-build-flags-'));
    baseRef = (await pushBusyboxImage(registry, work, 'kiln/busybox', '1')).ref;
    daemon = await startKilnd();
    ctx = join(work, 'ctx');
    mkdirSync(ctx);
    // `as` in lower case next to FROM: BuildKit's FromAsCasing check warns.
    writeFileSync(join(ctx, 'Dockerfile'), `FROM ${baseRef} as base\nRUN echo built > /built.txt\nCOPY hello.txt /hello.txt\n`);
    writeFileSync(join(ctx, 'hello.txt'), 'hello from the context\n');
  }, 60_000);

  afterAll(async () => {
    await daemon?.stop();
    await registry?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('-q prints only the image id; --iidfile and --metadata-file carry buildx\'s keys, the warnings and the annotations', async () => {
    const iid = join(work, 'iid.txt');
    const meta = join(work, 'meta.json');
    const ref = `${registry.host}/kiln/flags:1`;
    const res = await runKiln([
      // --provenance=false: the descriptor of the bare image manifest (a push gets buildx's default provenance otherwise).
      'build', '--addr', daemon.addr, '-q', '--push', '--provenance=false', '-t', ref, '--iidfile', iid, '--metadata-file', meta,
      '--annotation', 'org.opencontainers.image.title=flags', '--annotation', 'manifest-descriptor:kiln.test=desc', ctx,
    ]);
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-3000)}`).toBe(0);
    expect(res.stdout).toMatch(/^sha256:[0-9a-f]{64}\n$/);
    expect(res.stderr).not.toMatch(/#\d+ /);
    const id = res.stdout.trim();
    expect(readFileSync(iid, 'utf8')).toBe(id);
    const md = JSON.parse(readFileSync(meta, 'utf8')) as Record<string, any>;
    expect(md['containerimage.config.digest']).toBe(id);
    expect(md['buildx.build.ref']).toMatch(/^default\/default\/[0-9a-z]{25}$/);
    expect(md['containerimage.descriptor']).toMatchObject({ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: md['containerimage.digest'] });
    const warnings = md['buildx.build.warnings'] as { short: string; sourceInfo?: { filename: string }; range?: unknown[] }[];
    expect(warnings.map((w) => Buffer.from(w.short, 'base64').toString())).toEqual([expect.stringContaining("FromAsCasing: 'as' and 'FROM' keywords' casing do not match")]);
    expect(warnings[0]!.sourceInfo?.filename).toBe('Dockerfile');
    // The manifest annotation is in the pushed manifest.
    const manifest = await (await fetch(`${registry.url}/v2/kiln/flags/manifests/1`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } })).json() as { annotations?: Record<string, string> };
    expect(manifest.annotations).toMatchObject({ 'org.opencontainers.image.title': 'flags' });
  });

  it('-t alone says where the image is and how to get it; --progress=none prints no steps', async () => {
    const res = await runKiln(['build', '--addr', daemon.addr, '--progress=none', '-t', 'kiln-test/hint:1', ctx]);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).not.toMatch(/#\d+ /);
    expect(res.stderr).toContain("Image kiln-test/hint:1 is kept in the kiln daemon's image store. To get it, build with --load (into Docker) or --push");
  });

  it('context "-" takes a tar (gzip too) or a lone Dockerfile; -f - takes the Dockerfile', async () => {
    const tar = makeTar({ Dockerfile: `FROM ${baseRef}\nCOPY a.txt /a.txt\n`, 'a.txt': 'from a tar on stdin\n' });
    for (const [name, input] of [['tar', tar], ['tar.gz', gzipSync(tar)]] as const) {
      const out = join(work, `stdin-${name}`);
      const r = kilnWithStdin(['build', '--addr', daemon.addr, '--progress=plain', '-o', `type=local,dest=${out}`, '-'], input);
      expect(r.code, r.stderr).toBe(0);
      expect(readFileSync(join(out, 'a.txt'), 'utf8')).toBe('from a tar on stdin\n');
    }
    const out = join(work, 'stdin-dockerfile');
    const lone = kilnWithStdin(['build', '--addr', daemon.addr, '--progress=plain', '-o', `type=local,dest=${out}`, '-'], `FROM ${baseRef}\nRUN echo lone > /lone.txt\n`);
    expect(lone.code, lone.stderr).toBe(0);
    expect(readFileSync(join(out, 'lone.txt'), 'utf8')).toBe('lone\n');

    const out2 = join(work, 'stdin-f');
    const f = kilnWithStdin(['build', '--addr', daemon.addr, '--progress=plain', '-f', '-', '-o', `type=local,dest=${out2}`, ctx], `FROM ${baseRef}\nCOPY hello.txt /from-f.txt\n`);
    expect(f.code, f.stderr).toBe(0);
    expect(readFileSync(join(out2, 'from-f.txt'), 'utf8')).toBe('hello from the context\n');

    const both = kilnWithStdin(['build', '--addr', daemon.addr, '-f', '-', '-'], 'FROM scratch\n');
    expect(both.code).toBe(2);
    expect(both.stderr).toContain("can't use stdin for both the build context and the Dockerfile");
    expect(readdirSync(tmpdir()).filter((n) => n.startsWith('kiln-stdin-'))).toEqual([]);
  });

  it('--platform local builds for this machine; an unknown platform is refused before anything runs', async () => {
    const out = join(work, 'local-platform');
    const ok = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '--platform', 'local', '-o', `type=local,dest=${out}`, ctx]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(readFileSync(join(out, 'built.txt'), 'utf8')).toBe('built\n');
    const bad = await runKiln(['build', '--addr', daemon.addr, '--platform', 'linux/amd65', ctx]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('ERROR: invalid argument "linux/amd65" for "--platform" flag: unknown architecture "amd65"');
  });

  it('--shm-size sizes /dev/shm and --ulimit (repeated) sets the limits of every RUN; a bad value names the flag', async () => {
    const dir = join(work, 'limits');
    mkdirSync(dir);
    writeFileSync(join(dir, 'Dockerfile'), `FROM ${baseRef}\nRUN df -k /dev/shm | tail -1 > /shm.txt && ulimit -n > /limits.txt && ulimit -Hn >> /limits.txt && ulimit -u >> /limits.txt\n`);
    const out = join(dir, 'out');
    const res = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '--shm-size=128m', '--ulimit', 'nofile=1024:2048', '--ulimit', 'nproc=300', '-o', `type=local,dest=${out}`, dir]);
    expect(res.code, res.stderr).toBe(0);
    expect(readFileSync(join(out, 'shm.txt'), 'utf8').trim().split(/\s+/)[1]).toBe('131072'); // 1K blocks
    expect(readFileSync(join(out, 'limits.txt'), 'utf8')).toBe('1024\n2048\n300\n');
    const bad = await runKiln(['build', '--addr', daemon.addr, '--ulimit', 'nofile=4096:1024', dir]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('invalid argument "nofile=4096:1024" for "--ulimit" flag: ulimit soft limit must be less than or equal to hard limit: 4096 > 1024');
    const badShm = await runKiln(['build', '--addr', daemon.addr, '--shm-size', '12x', dir]);
    expect(badShm.code).toBe(2);
    expect(badShm.stderr).toContain(`invalid argument "12x" for "--shm-size" flag: invalid size: '12x'`);
  });

  it('--call outline|targets (text and format=json) answer as buildx prints them; --check and check=error=true fail on warnings', async () => {
    const dir = join(work, 'call');
    mkdirSync(dir);
    writeFileSync(
      join(dir, 'Dockerfile'),
      `ARG BASE=${baseRef}\nARG UNUSED=1\nFROM \${BASE} AS deps\nRUN --mount=type=secret,id=npmrc,required true\n\n# app builds the app\nFROM deps AS app\n# MODE release or debug\nARG MODE=release\nRUN --mount=type=ssh true\n`,
    );
    const outline = await runKiln(['build', '--addr', daemon.addr, '--call', 'outline', '--build-arg', 'MODE=debug', dir]);
    expect(outline.code, outline.stderr).toBe(0);
    expect(outline.stdout).toContain('TARGET:      app\nDESCRIPTION: builds the app\n\nBUILD ARG   VALUE');
    expect(outline.stdout).toMatch(/\nBASE +127\.0\.0\.1:\d+\/kiln\/busybox:1 +\nMODE +debug +release or debug\n\nSECRET +REQUIRED\nnpmrc +true\n\nSSH +REQUIRED\ndefault +\n\n$/);
    const json = await runKiln(['build', '--addr', daemon.addr, '--call=outline,format=json', dir]);
    expect(json.code, json.stderr).toBe(0);
    const o = JSON.parse(json.stdout) as { name: string; args: { name: string; value?: string }[]; secrets: { name: string; required?: boolean }[]; sources: string[] };
    expect(o).toMatchObject({ name: 'app', args: [{ name: 'BASE', value: baseRef }, { name: 'MODE', value: 'release', description: 'release or debug' }], secrets: [{ name: 'npmrc', required: true }], ssh: [{ name: 'default' }] });
    expect(Buffer.from(o.sources[0]!, 'base64').toString()).toContain('FROM deps AS app');
    const targets = await runKiln(['build', '--addr', daemon.addr, '--call', 'targets', dir]);
    expect(targets.stdout).toBe('TARGET        DESCRIPTION\ndeps          \napp (default) builds the app\n');
    const targetsJson = JSON.parse((await runKiln(['build', '--addr', daemon.addr, '--call=targets,format=json', dir])).stdout) as { targets: { name: string; default?: boolean; description?: string }[] };
    expect(targetsJson.targets.map((t) => [t.name, t.default ?? false, t.description ?? ''])).toEqual([['deps', false, ''], ['app', true, 'builds the app']]);

    // ctx has one warning (FromAsCasing): --check prints it on stdout and exits 1, as buildx.
    const check = await runKiln(['build', '--addr', daemon.addr, '--check', ctx]);
    expect(check.code).toBe(1);
    expect(check.stdout).toContain('WARNING: FromAsCasing');
    expect(check.stdout).toContain('Check complete, 1 warning has been found!');
    const checkJson = await runKiln(['build', '--addr', daemon.addr, '--call=check,format=json', ctx]);
    expect(checkJson.code).toBe(1);
    expect((JSON.parse(checkJson.stdout) as { warnings: { ruleName: string }[] }).warnings.map((w) => w.ruleName)).toEqual(['FromAsCasing']);
    expect((await runKiln(['build', '--addr', daemon.addr, '--call=check,ignorestatus=true', ctx])).code).toBe(0);
    const clean = await runKiln(['build', '--addr', daemon.addr, '--check', dir]);
    expect(clean.code, clean.stdout).toBe(0);
    expect(clean.stdout).toContain('Check complete, no warnings found.');
    // check=error=true: a build with a warning fails.
    const strict = join(work, 'strict');
    mkdirSync(strict);
    writeFileSync(join(strict, 'Dockerfile'), `# check=error=true\nFROM ${baseRef} as base\nRUN true\n`);
    const failed = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', strict]);
    expect(failed.code).toBe(1);
    expect(failed.stderr).toMatch(/lint violation found for rules: FromAsCasing/);
  });

  it('--print targets is --call=targets', async () => {
    const res = await runKiln(['build', '--addr', daemon.addr, '--print', 'targets', ctx]);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toMatch(/TARGET\s+DESCRIPTION\nbase/);
  });

  describe.skipIf(!findDockerd())('--load', () => {
    let dockerd: TestDockerd;
    beforeAll(async () => {
      dockerd = await startDockerd();
    }, 60_000);
    afterAll(async () => {
      await dockerd?.stop();
    });

    it('loads the image into dockerd (DOCKER_HOST) with its tag; the image id is the one -q prints', async () => {
      const res = await runKiln(['build', '--addr', daemon.addr, '-q', '--load', '-t', 'kiln-test/loaded:1', ctx], { env: { DOCKER_HOST: dockerd.host } });
      expect(res.code, `${res.stderr}\n${dockerd.logs().slice(-2000)}`).toBe(0);
      const inspect = await dockerd.docker(['image', 'inspect', 'kiln-test/loaded:1', '--format', '{{.Id}} {{json .Config.Cmd}}']);
      expect(inspect.code, inspect.stderr).toBe(0);
      expect(inspect.stdout.split(' ')[0]).toBe(res.stdout.trim());
      expect(readdirSync(tmpdir()).filter((n) => n.startsWith('kiln-load-'))).toEqual([]);

      const down = await runKiln(['build', '--addr', daemon.addr, '--progress=none', '--load', '-t', 'kiln-test/loaded:2', ctx], { env: { DOCKER_HOST: `unix://${join(work, 'no-docker.sock')}` } });
      expect(down.code).toBe(1);
      expect(down.stderr).toMatch(/failed to load the image into docker at unix:\/\/.*no-docker\.sock: ENOENT/);
    });
  });
});
