import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushBusyboxImage, repoRoot, runKiln, startKilnCluster, startKilnNats, startRegistry, type KilnCluster, type KilnNats, type RunResult, type TestRegistry } from '@kiln/testkit';

/**
 * The kiln.yaml frontend (packages/frontend-kiln-yaml, written with
 * @kiln/frontend-sdk) runs as its own tier beside a split cluster, with its
 * own mTLS certificate and NATS login; `# syntax=kiln-yaml.v0` routes a
 * build to it, and it calls back into the solver's gateway to read the
 * base image's /etc/passwd before it answers.
 */
describe('pluggable frontends [topology=split + kiln-yaml.v0 tier]', () => {
  let nats: KilnNats;
  let cluster: KilnCluster;
  let registry: TestRegistry;
  let frontendProc: ChildProcess;
  let frontendLog = '';
  let work: string;
  let base: string;
  const logs = (res: RunResult) => `exit ${res.code}\nstderr:\n${res.stderr}\nfrontend:\n${frontendLog.slice(-4000)}\ncluster:\n${cluster.logs().slice(-6000)}`;
  const build = (ctx: string, args: string[]) => runKiln(['build', '--addr', cluster.addr, '--progress=plain', ...args, ctx], { env: cluster.env });

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'kiln-frontends-'));
    registry = await startRegistry();
    nats = await startKilnNats();
    cluster = await startKilnCluster(nats);
    const busybox = (await pushBusyboxImage(registry, work, 'kiln/busybox', '1', { applets: 'all' })).ref;
    frontendProc = spawn(
      process.execPath,
      [join(repoRoot(), 'packages/frontend-kiln-yaml/dist/main.js'), '--nats', nats.url, ...nats.tierArgs('frontend'), '--listen', 'tcp://127.0.0.1:0', '--id', 'kiln-yaml-1', ...cluster.certs!.args('frontend')],
      { env: { ...process.env, KILN_LOG_LEVEL: 'debug' }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    frontendProc.stdout!.on('data', (d) => (frontendLog += d));
    frontendProc.stderr!.on('data', (d) => (frontendLog += d));
    // A base with a user in /etc/passwd, built and pushed by the cluster itself.
    const baseCtx = join(work, 'base');
    mkdirSync(baseCtx);
    writeFileSync(join(baseCtx, 'Dockerfile'), `FROM ${busybox}\nRUN mkdir -p /etc /data && chown 1000:1000 /data && echo 'app:x:1000:1000::/:/bin/sh' > /etc/passwd\n`);
    base = `${registry.host}/kiln/base:1`;
    const pushed = await build(baseCtx, ['--push', '-t', base]);
    if (pushed.code !== 0) throw new Error(`base image build failed:\n${logs(pushed)}`);
    // The frontend is in the solver's directory (it answers `# syntax=`) once its ready line is logged.
    const deadline = Date.now() + 20_000;
    while (!frontendLog.includes('frontend ready')) {
      if (Date.now() > deadline || frontendProc.exitCode !== null) throw new Error(`kiln-yaml frontend did not start:\n${frontendLog}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }, 120_000);

  afterAll(async () => {
    frontendProc?.kill('SIGTERM');
    await cluster?.stop();
    await nats?.stop();
    await registry?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('builds an image from kiln.yaml selected by # syntax=, through the frontend tier and its gateway calls', async () => {
    const ctx = mkdtempSync(join(work, 'yaml-'));
    writeFileSync(join(ctx, 'hello.sh'), '#!/bin/sh\necho "hello from $GREETING as $(id -u)"\n');
    writeFileSync(
      join(ctx, 'kiln.yaml'),
      ['# syntax=kiln-yaml.v0', `base: ${base}`, 'env:', '  GREETING: kiln.yaml', 'workdir: /app', 'user: app', 'files:', '  - src: hello.sh', '    dest: /app/hello.sh', '    mode: "0755"', 'run:', '  - ./hello.sh > /data/out.txt', 'cmd: ["/app/hello.sh"]', ''].join('\n'),
    );
    const out = join(work, 'yaml-out');
    const res = await build(ctx, ['-f', join(ctx, 'kiln.yaml'), '-o', `type=local,dest=${out}`]);
    expect(res.code, logs(res)).toBe(0);
    expect(readFileSync(join(out, 'data/out.txt'), 'utf8')).toBe('hello from kiln.yaml as 1000\n');
    expect(res.stderr).toContain('[kiln.yaml] run: ./hello.sh > /data/out.txt');
    // The frontend tier answered (not the built-in one), and the gateway served its read of the base.
    expect(frontendLog).toContain('frontend solve');
    expect(cluster.logs()).not.toMatch(/unknown frontend/);

    const oci = join(work, 'yaml.tar');
    const img = await build(ctx, ['-f', join(ctx, 'kiln.yaml'), '-o', `type=oci,dest=${oci}`]);
    expect(img.code, logs(img)).toBe(0);
    // The image config the frontend wrote, as skopeo reads it from the OCI archive.
    const config = JSON.parse(execFileSync('skopeo', ['inspect', '--config', `oci-archive:${oci}`], { encoding: 'utf8' })) as { config: { User?: string; Cmd?: string[]; WorkingDir?: string; Env?: string[] } };
    expect(config.config).toMatchObject({ User: 'app', Cmd: ['/app/hello.sh'], WorkingDir: '/app' });
    expect(config.config.Env).toContain('GREETING=kiln.yaml');
  });

  it('names the # syntax= line and the frontends offered when the syntax is unknown', async () => {
    const ctx = mkdtempSync(join(work, 'unknown-'));
    writeFileSync(join(ctx, 'Dockerfile'), '# syntax=acme/nope:1\nFROM scratch\n');
    const res = await build(ctx, ['-o', `type=local,dest=${join(work, 'unknown-out')}`]);
    expect(res.code, logs(res)).toBe(1);
    expect(res.stderr).toContain('"# syntax=acme/nope:1" (Dockerfile:1): no frontend serves "acme/nope:1" (this cluster offers: dockerfile.v0, kiln-yaml.v0)');
  });

  it('a user missing from the base image is an error naming the kiln.yaml line (read through the gateway)', async () => {
    const ctx = mkdtempSync(join(work, 'ghost-'));
    writeFileSync(join(ctx, 'kiln.yaml'), `# syntax=kiln-yaml.v0\nbase: ${base}\nuser: ghost\n`);
    const res = await build(ctx, ['-f', join(ctx, 'kiln.yaml'), '-o', `type=local,dest=${join(work, 'ghost-out')}`]);
    expect(res.code, logs(res)).toBe(1);
    expect(res.stderr).toContain(`kiln.yaml:3: user "ghost" is not in /etc/passwd of ${base}`);
  });

  it('keeps docker/dockerfile syntaxes on the built-in Dockerfile frontend; BUILDKIT_SYNTAX and --frontend pick a frontend', async () => {
    const ctx = mkdtempSync(join(work, 'dockerfile-'));
    writeFileSync(join(ctx, 'Dockerfile'), '# syntax=docker/dockerfile:1.7-labs\nFROM scratch\nCOPY a.txt /\n');
    writeFileSync(join(ctx, 'a.txt'), 'a\n');
    const out = join(work, 'dockerfile-out');
    const res = await build(ctx, ['-o', `type=local,dest=${out}`]);
    expect(res.code, logs(res)).toBe(0);
    expect(readFileSync(join(out, 'a.txt'), 'utf8')).toBe('a\n');

    writeFileSync(join(ctx, 'kiln.yaml'), `base: scratch\nfiles:\n  - src: a.txt\n    dest: /from-yaml.txt\n`);
    const viaArg = await build(ctx, ['-f', join(ctx, 'kiln.yaml'), '--build-arg', 'BUILDKIT_SYNTAX=kiln-yaml.v0', '-o', `type=local,dest=${join(work, 'arg-out')}`]);
    expect(viaArg.code, logs(viaArg)).toBe(0);
    expect(readFileSync(join(work, 'arg-out', 'from-yaml.txt'), 'utf8')).toBe('a\n');
    const viaFlag = await build(ctx, ['-f', join(ctx, 'kiln.yaml'), '--frontend', 'kiln-yaml.v0', '-o', `type=local,dest=${join(work, 'flag-out')}`]);
    expect(viaFlag.code, logs(viaFlag)).toBe(0);
    expect(readFileSync(join(work, 'flag-out', 'from-yaml.txt'), 'utf8')).toBe('a\n');
  });
});
