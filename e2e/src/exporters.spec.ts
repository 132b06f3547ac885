import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findDockerd, findRegistry, pushBusyboxImage, runKiln, startDockerd, startKilnd, startRegistry, type Kilnd, type TestRegistry, e2eWorker } from '@kiln/testkit';

const BUSYBOX = '/bin/busybox';
const sha = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const has = (bin: string) => spawnSync('sh', ['-c', `command -v ${bin}`]).status === 0;
const isRoot = process.getuid?.() === 0;

function run(cmd: string, args: string[], opts: { cwd?: string; timeoutMs?: number } = {}): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { cwd: opts.cwd, encoding: 'utf8', timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 << 20 });
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: `${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
}

const metadata = (file: string) => JSON.parse(readFileSync(file, 'utf8')) as Record<string, any>;

/** A private containerd (temp root, state and socket; CRI off), stopped and cleaned by `stop()`. */
async function startContainerd(): Promise<{ socket: string; stop(): Promise<void>; logs(): string }> {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-containerd-'));
  const socket = join(dir, 'containerd.sock');
  writeFileSync(
    join(dir, 'config.toml'),
    [
      'version = 2',
      `root = ${JSON.stringify(join(dir, 'root'))}`,
      `state = ${JSON.stringify(join(dir, 'state'))}`,
      'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
      '[grpc]',
      `  address = ${JSON.stringify(socket)}`,
      '[ttrpc]',
      `  address = ${JSON.stringify(join(dir, 'containerd.sock.ttrpc'))}`,
    ].join('\n') + '\n',
  );
  const child: ChildProcess = spawn('containerd', ['--config', join(dir, 'config.toml')], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout?.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-20000)));
  child.stderr?.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-20000)));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    }
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[4])
      .filter((p): p is string => !!p && p.startsWith(dir + '/'))
      .sort((a, b) => b.length - a.length);
    for (const m of mounts) spawnSync('umount', ['-l', m]);
    rmSync(dir, { recursive: true, force: true });
  };
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) break;
    if (existsSync(socket) && run('ctr', ['-a', socket, 'version']).code === 0) return { socket, stop, logs: () => log };
    await new Promise((r) => setTimeout(r, 50));
  }
  await stop();
  throw new Error(`failed to start containerd\n${log}`);
}

const canRun = isRoot && !!findRegistry() && existsSync(BUSYBOX) && has('runc');
const EXPECTED = 'built in kiln\nhello from CMD\n';

describe.skipIf(!canRun)(`image exporters checked with outside tools [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let registry: TestRegistry;
  let daemon: Kilnd;
  let work: string;
  let ctx: string;
  let baseRef: string;

  beforeAll(async () => {
    registry = await startRegistry();
    work = mkdtempSync(join(tmpdir(), 'kiln-exporters-e2e-'));
    baseRef = (await pushBusyboxImage(registry, work, 'kiln/busybox', '1')).ref;
    daemon = await startKilnd();
    ctx = join(work, 'ctx');
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'Dockerfile'), `FROM ${baseRef}\nRUN echo built in kiln > /built.txt\nCMD ["/bin/sh", "-c", "cat /built.txt; echo hello from CMD"]\n`);
  }, 60_000);

  afterAll(async () => {
    await daemon?.stop();
    await registry?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  const build = async (args: string[], context = ctx) => {
    const res = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', ...args, context]);
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
    return res;
  };

  it.skipIf(!has('skopeo') || !has('umoci'))('type=oci: skopeo inspects the tarball; umoci unpacks it and runc runs the CMD', async () => {
    const tarball = join(work, 'app.oci.tar');
    const meta = join(work, 'oci-meta.json');
    await build(['-o', `type=oci,dest=${tarball},name=kiln-test/app:1`, '--metadata-file', meta]);
    const md = metadata(meta);
    expect(md['containerimage.digest']).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(md['containerimage.descriptor']).toMatchObject({ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: md['containerimage.digest'] });
    expect(md['image.name']).toBe('kiln-test/app:1');

    const inspect = run('skopeo', ['inspect', `oci-archive:${tarball}`]);
    expect(inspect.code, inspect.stderr).toBe(0);
    const info = JSON.parse(inspect.stdout) as { Digest: string; Layers: string[]; Os: string };
    expect(info.Digest).toBe(md['containerimage.digest']);
    expect(info.Layers).toHaveLength(2);
    expect(info.Os).toBe('linux');
    const rawConfig = JSON.parse(run('skopeo', ['inspect', '--config', `oci-archive:${tarball}`]).stdout) as { config: { Cmd: string[] }; history: object[] };
    expect(rawConfig.config.Cmd).toEqual(['/bin/sh', '-c', 'cat /built.txt; echo hello from CMD']);
    expect(rawConfig.history.length).toBeGreaterThanOrEqual(2);

    const layout = join(work, 'layout');
    mkdirSync(layout);
    expect(run('tar', ['-xf', tarball, '-C', layout]).code).toBe(0);
    const bundle = join(work, 'bundle');
    const unpack = run('umoci', ['unpack', '--image', `${layout}:1`, bundle]);
    expect(unpack.code, unpack.stderr).toBe(0);
    const specPath = join(bundle, 'config.json');
    const spec = JSON.parse(readFileSync(specPath, 'utf8')) as { process: { terminal: boolean } };
    spec.process.terminal = false;
    writeFileSync(specPath, JSON.stringify(spec));
    const runcRoot = join(work, 'runc-root');
    const res = run('runc', ['--root', runcRoot, 'run', '--bundle', bundle, `kiln-e2e-${process.pid}`]);
    expect(res.stderr).toBe('');
    expect(res.stdout).toBe(EXPECTED);
    run('runc', ['--root', runcRoot, 'delete', '-f', `kiln-e2e-${process.pid}`]);
  }, 120_000);

  it.skipIf(!has('umoci'))('type=oci with a 9 MiB layer of stored and deflated gzip members, copied into the tarball in the kernel: gzip -t and umoci (Go\'s gzip reader) read it back', async () => {
    const bigCtx = join(work, 'big-ctx');
    mkdirSync(bigCtx);
    // Noise (stored members) then text (deflated), crossing the 4 MiB member boundaries.
    const noise = createCipheriv('aes-128-ctr', Buffer.alloc(16, 7), Buffer.alloc(16)).update(Buffer.alloc(6 << 20));
    const big = Buffer.concat([noise, Buffer.from('kiln layer text\n'.repeat(3 << 16))]);
    writeFileSync(join(bigCtx, 'big.bin'), big);
    writeFileSync(join(bigCtx, 'Dockerfile'), `FROM ${baseRef}\nCOPY big.bin /big.bin\n`);
    const tarball = join(work, 'big.oci.tar');
    await build(['-o', `type=oci,dest=${tarball},name=kiln-test/big:1`], bigCtx);
    // The layer went from the content store's file into the tarball by copy_file_range, not through the heap.
    const copied = [...daemon.logs().matchAll(/"fileCopiedBytes":(\d+)/g)].map((m) => Number(m[1]));
    expect(Math.max(0, ...copied)).toBeGreaterThan(noise.length);
    const layout = join(work, 'big-layout');
    mkdirSync(layout);
    expect(run('tar', ['-xf', tarball, '-C', layout]).code).toBe(0);
    const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
    const manifest = JSON.parse(readFileSync(join(layout, 'blobs', ...index.manifests[0]!.digest.split(':')), 'utf8')) as { layers: { digest: string; size: number }[] };
    const top = manifest.layers.at(-1)!;
    const blobFile = join(layout, 'blobs', ...top.digest.split(':'));
    expect(sha(readFileSync(blobFile))).toBe(top.digest);
    expect(run('gzip', ['-t', blobFile]).code).toBe(0);
    const bundle = join(work, 'big-bundle');
    const unpack = run('umoci', ['unpack', '--image', `${layout}:1`, bundle]);
    expect(unpack.code, unpack.stderr).toBe(0);
    expect(sha(readFileSync(join(bundle, 'rootfs', 'big.bin')))).toBe(sha(big));
  }, 120_000);

  it('type=oci,tar=false writes an OCI layout directory', async () => {
    const dir = join(work, 'layout-dir');
    await build(['-o', `type=oci,dest=${dir},tar=false,name=kiln-test/app:dir`]);
    const index = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as { manifests: { digest: string; annotations: Record<string, string> }[] };
    expect(index.manifests[0]!.annotations['org.opencontainers.image.ref.name']).toBe('dir');
    expect(existsSync(join(dir, 'blobs', 'sha256', index.manifests[0]!.digest.slice(7)))).toBe(true);
    if (has('skopeo')) expect(run('skopeo', ['inspect', `oci:${dir}:dir`]).code).toBe(0);
  }, 120_000);

  it.skipIf(!findDockerd() || !has('docker'))('type=docker: docker load, then docker run --network=none prints the CMD output', async () => {
    const tarball = join(work, 'app.docker.tar');
    await build(['-o', `type=docker,dest=${tarball}`, '-t', 'kiln-test/docker-app:1']);
    const dockerd = await startDockerd();
    try {
      const load = await dockerd.docker(['load', '-i', tarball]);
      expect(load.code, `${load.stderr}\n${dockerd.logs().slice(-3000)}`).toBe(0);
      expect(load.stdout).toContain('kiln-test/docker-app:1');
      const res = await dockerd.docker(['run', '--rm', '--network=none', 'kiln-test/docker-app:1']);
      expect(res.code, res.stderr).toBe(0);
      expect(res.stdout).toBe(EXPECTED);
    } finally {
      await dockerd.stop();
    }
  }, 180_000);

  it.skipIf(!has('containerd') || !has('ctr'))('type=oci: ctr images import into containerd, then ctr run prints the CMD output', async () => {
    const tarball = join(work, 'app.ctr.tar');
    await build(['-o', `type=oci,dest=${tarball},name=kiln-test/ctr-app:1`]);
    const containerd = await startContainerd();
    const id = `kiln-e2e-${process.pid}`;
    try {
      const imp = run('ctr', ['-a', containerd.socket, '-n', 'kiln', 'images', 'import', tarball]);
      expect(imp.code, `${imp.stderr}\n${containerd.logs()}`).toBe(0);
      const list = run('ctr', ['-a', containerd.socket, '-n', 'kiln', 'images', 'ls', '-q']);
      expect(list.stdout.split('\n')).toContain('docker.io/kiln-test/ctr-app:1');
      const res = run('ctr', ['-a', containerd.socket, '-n', 'kiln', 'run', '--rm', 'docker.io/kiln-test/ctr-app:1', id], { timeoutMs: 60_000 });
      expect(res.code, `${res.stderr}\n${containerd.logs()}`).toBe(0);
      expect(res.stdout.replace(/\r\n/g, '\n')).toBe(EXPECTED);
    } finally {
      run('ctr', ['-a', containerd.socket, '-n', 'kiln', 'tasks', 'kill', '-s', 'SIGKILL', id]);
      run('ctr', ['-a', containerd.socket, '-n', 'kiln', 'containers', 'rm', id]);
      await containerd.stop();
    }
  }, 180_000);

  it.skipIf(!has('skopeo'))('--push: skopeo shows manifest, config and layers; a build FROM the pushed image works', async () => {
    const ref = `${registry.host}/kiln/app:pushed`;
    const meta = join(work, 'push-meta.json');
    // The bare image manifest: without --provenance=false a push carries buildx's default provenance (provenance.spec).
    await build(['--push', '--provenance=false', '-t', ref, '--metadata-file', meta]);
    const md = metadata(meta);
    expect(md['image.name']).toBe(ref);
    const raw = run('skopeo', ['inspect', '--tls-verify=false', '--raw', `docker://${ref}`]);
    expect(raw.code, raw.stderr).toBe(0);
    expect(sha(Buffer.from(raw.stdout))).toBe(md['containerimage.digest']);
    const manifest = JSON.parse(raw.stdout) as { config: { digest: string }; layers: unknown[] };
    expect(manifest.config.digest).toBe(md['containerimage.config.digest']);
    expect(manifest.layers).toHaveLength(2);
    const config = JSON.parse(run('skopeo', ['inspect', '--tls-verify=false', '--config', `docker://${ref}`]).stdout) as { rootfs: { diff_ids: string[] } };
    expect(config.rootfs.diff_ids).toHaveLength(2);

    const next = join(work, 'ctx-next');
    mkdirSync(next);
    writeFileSync(join(next, 'Dockerfile'), `FROM ${ref}\nRUN cat /built.txt > /again.txt\n`);
    const out = join(work, 'out-next');
    await build(['-o', `type=local,dest=${out}`], next);
    expect(readFileSync(join(out, 'again.txt'), 'utf8')).toBe('built in kiln\n');
  }, 180_000);

  it('SOURCE_DATE_EPOCH with rewrite-timestamp=true: two daemons with empty roots build the same image digest', async () => {
    const other = await startKilnd();
    try {
      const digests: string[] = [];
      for (const [i, d] of [daemon, other].entries()) {
        const meta = join(work, `repro-${i}.json`);
        const res = await runKiln(['build', '--addr', d.addr, '--progress=plain', '--no-cache', '--build-arg', 'SOURCE_DATE_EPOCH=1700000000', '-o', `type=oci,dest=${join(work, `repro-${i}.tar`)},name=kiln-test/repro:1,rewrite-timestamp=true`, '--metadata-file', meta, ctx]);
        expect(res.code, `${res.stderr}\n${d.logs().slice(-4000)}`).toBe(0);
        digests.push(metadata(meta)['containerimage.digest'] as string);
      }
      expect(digests[0]).toMatch(/^sha256:/);
      expect(digests[1]).toBe(digests[0]);
      expect(readFileSync(join(work, 'repro-0.tar')).equals(readFileSync(join(work, 'repro-1.tar')))).toBe(true);
    } finally {
      await other.stop();
    }
  }, 180_000);
});
