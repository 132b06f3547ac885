import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { findRegistry, runKiln, startKilnd, startRegistry, type Kilnd, type TestRegistry, e2eWorker } from '@kiln/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const HOST_BUSYBOX = '/bin/busybox';
/** Debian's busybox-static for arm64 (`apt-get download busybox-static:arm64`; tools/setup.sh puts it here). */
const ARM64_DEB = process.env.KILN_TEST_ARM64_BUSYBOX_DEB ?? '/var/cache/kiln-test/busybox-static_arm64.deb';
const HOST_ARCH = process.arch === 'arm64' ? 'arm64' : 'amd64';
const sha = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const has = (bin: string) => spawnSync('sh', ['-c', `command -v ${bin}`]).status === 0;
/** Whether qemu-user emulates `qemuArch` through an enabled binfmt_misc handler. */
const emulates = (qemuArch: string) => {
  try {
    return readFileSync(`/proc/sys/fs/binfmt_misc/qemu-${qemuArch}`, 'utf8').startsWith('enabled');
  } catch {
    return false;
  }
};

function run(cmd: string, args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 60_000, maxBuffer: 64 << 20 });
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: `${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
}

async function put(url: string, body: Buffer, contentType: string): Promise<void> {
  const res = await fetch(url, { method: 'PUT', body, headers: { 'content-type': contentType } });
  if (res.status !== 201) throw new Error(`PUT ${url}: HTTP ${res.status} ${await res.text()}`);
}

async function pushBlob(registry: TestRegistry, repo: string, data: Buffer): Promise<void> {
  const start = await fetch(`${registry.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  if (start.status !== 202) throw new Error(`upload start: HTTP ${start.status}`);
  const loc = new URL(start.headers.get('location')!, registry.url);
  loc.searchParams.set('digest', sha(data));
  await put(loc.toString(), data, 'application/octet-stream');
}

/** A busybox tree (`bin/busybox` plus sh/echo/cat/uname links and `/base-arch`) as one gzip layer. */
function busyboxLayer(work: string, arch: string, binary: string | undefined): { tar: Buffer; gz: Buffer } {
  const tree = mkdtempSync(join(work, `base-${arch}-`));
  writeFileSync(join(tree, 'base-arch'), `${arch}\n`);
  const entries = ['base-arch'];
  if (binary) {
    mkdirSync(join(tree, 'bin'));
    copyFileSync(binary, join(tree, 'bin', 'busybox'));
    chmodSync(join(tree, 'bin', 'busybox'), 0o755);
    for (const name of ['sh', 'echo', 'cat', 'uname']) symlinkSync('busybox', join(tree, 'bin', name));
    entries.push('bin');
  }
  const tar = execFileSync('tar', ['--numeric-owner', '--owner=0', '--group=0', '--mtime=@0', '--sort=name', '-C', tree, '-cf', '-', ...entries], { maxBuffer: 64 << 20 });
  return { tar, gz: gzipSync(tar) };
}

/** Pushes an index over one image per architecture (each one busybox layer) as `repo:tag`. */
async function pushMultiArchBase(registry: TestRegistry, repo: string, tag: string, layers: Record<string, { tar: Buffer; gz: Buffer }>): Promise<string> {
  const manifests = [];
  for (const [architecture, layer] of Object.entries(layers)) {
    const config = Buffer.from(JSON.stringify({ architecture, os: 'linux', config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'] }, rootfs: { type: 'layers', diff_ids: [sha(layer.tar)] } }));
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha(layer.gz), size: layer.gz.length }],
      }),
    );
    await pushBlob(registry, repo, layer.gz);
    await pushBlob(registry, repo, config);
    await put(`${registry.url}/v2/${repo}/manifests/${sha(manifest)}`, manifest, 'application/vnd.oci.image.manifest.v1+json');
    manifests.push({ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha(manifest), size: manifest.length, platform: { architecture, os: 'linux' } });
  }
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests }));
  await put(`${registry.url}/v2/${repo}/manifests/${tag}`, index, 'application/vnd.oci.image.index.v1+json');
  return `${registry.host}/${repo}:${tag}`;
}

/** The arm64 busybox binary from the .deb (extracted, not installed), or undefined when the .deb is absent. */
function arm64Busybox(work: string): string | undefined {
  if (process.arch !== 'x64' || !existsSync(ARM64_DEB) || !has('dpkg-deb')) return undefined;
  const dir = join(work, 'arm64-deb');
  mkdirSync(dir);
  execFileSync('sh', ['-c', `dpkg-deb --fsys-tarfile "$0" | tar -x -C "$1" ./bin/busybox`, ARM64_DEB, dir]);
  return join(dir, 'bin', 'busybox');
}

const canRun = process.getuid?.() === 0 && !!findRegistry() && existsSync(HOST_BUSYBOX) && has('runc');
const toolsPresent = has('skopeo') && has('umoci');

describe.skipIf(!canRun)(`multi-platform builds [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let registry: TestRegistry;
  let daemon: Kilnd;
  let work: string;
  let baseRef: string;
  let armBusybox: string | undefined;

  beforeAll(async () => {
    registry = await startRegistry();
    work = mkdtempSync(join(tmpdir(), 'kiln-multi-e2e-'));
    armBusybox = arm64Busybox(work);
    const other = HOST_ARCH === 'amd64' ? 'arm64' : 'amd64';
    baseRef = await pushMultiArchBase(registry, 'kiln/multi-base', '1', {
      [HOST_ARCH]: busyboxLayer(work, HOST_ARCH, HOST_BUSYBOX),
      [other]: busyboxLayer(work, other, other === 'arm64' ? armBusybox : undefined),
    });
    daemon = await startKilnd();
  }, 60_000);

  afterAll(async () => {
    await daemon?.stop();
    await registry?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  const context = (name: string, dockerfile: string) => {
    const dir = join(work, name);
    mkdirSync(dir);
    writeFileSync(join(dir, 'Dockerfile'), dockerfile);
    return dir;
  };
  const build = async (args: string[], ctx: string) => {
    const res = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', ...args, ctx]);
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
    return res;
  };

  // Cross-compilation: every RUN is on the build platform; the target stage only copies.
  const crossCompile = () => [
    `FROM --platform=$BUILDPLATFORM ${baseRef} AS tools`,
    'RUN cat /proc/sys/kernel/random/uuid > /stamp',
    `FROM --platform=$BUILDPLATFORM ${baseRef} AS build`,
    'ARG TARGETPLATFORM BUILDPLATFORM',
    'RUN echo "built on $BUILDPLATFORM for $TARGETPLATFORM" > /out.txt',
    `FROM ${baseRef}`,
    'COPY --from=tools /stamp /stamp',
    'COPY --from=build /out.txt /out.txt',
    '',
  ].join('\n');

  it.skipIf(!toolsPresent)('cross-compiles to an OCI index: skopeo sees two platforms, umoci unpacks each; a shared build stage runs once', async () => {
    const ctx = context('cross', crossCompile());
    const tarball = join(work, 'multi.oci.tar');
    const meta = join(work, 'multi-meta.json');
    await build(['--platform', 'linux/amd64,linux/arm64', '-o', `type=oci,dest=${tarball},name=kiln-test/multi:1,annotation-index.org.example.kind=multi`, '--metadata-file', meta], ctx);

    const raw = run('skopeo', ['inspect', '--raw', `oci-archive:${tarball}`]);
    expect(raw.code, raw.stderr).toBe(0);
    const index = JSON.parse(raw.stdout) as { mediaType: string; manifests: { digest: string; platform: { os: string; architecture: string } }[]; annotations: Record<string, string> };
    expect(index.mediaType).toBe('application/vnd.oci.image.index.v1+json');
    expect(index.manifests.map((m) => m.platform)).toEqual([
      { architecture: 'amd64', os: 'linux' },
      { architecture: 'arm64', os: 'linux' },
    ]);
    expect(index.annotations).toEqual({ 'org.example.kind': 'multi' });
    const md = JSON.parse(readFileSync(meta, 'utf8')) as Record<string, any>;
    expect(md['containerimage.digest']).toBe(sha(Buffer.from(raw.stdout)));
    expect(md['containerimage.descriptor']).toMatchObject({ mediaType: 'application/vnd.oci.image.index.v1+json' });

    const stamps = new Set<string>();
    for (const arch of ['amd64', 'arm64']) {
      const config = run('skopeo', ['inspect', '--override-arch', arch, '--config', `oci-archive:${tarball}`]);
      expect(config.code, config.stderr).toBe(0);
      expect((JSON.parse(config.stdout) as { architecture: string }).architecture).toBe(arch);
      const layout = join(work, `layout-${arch}`);
      const copy = run('skopeo', ['copy', '--override-arch', arch, `oci-archive:${tarball}`, `oci:${layout}:${arch}`]);
      expect(copy.code, copy.stderr).toBe(0);
      const bundle = join(work, `bundle-${arch}`);
      const unpack = run('umoci', ['unpack', '--image', `${layout}:${arch}`, bundle]);
      expect(unpack.code, unpack.stderr).toBe(0);
      expect(readFileSync(join(bundle, 'rootfs', 'out.txt'), 'utf8')).toBe(`built on linux/${HOST_ARCH} for linux/${arch}\n`);
      expect(readFileSync(join(bundle, 'rootfs', 'base-arch'), 'utf8')).toBe(`${arch}\n`);
      stamps.add(readFileSync(join(bundle, 'rootfs', 'stamp'), 'utf8'));
    }
    // The tools stage has the same key for both targets: it ran once, so both images hold one stamp.
    expect(stamps.size).toBe(1);
  }, 180_000);

  it('type=local and type=tar: one folder per platform', async () => {
    const ctx = context('local', crossCompile());
    const dest = join(work, 'local-out');
    const tarFile = join(work, 'multi.tar');
    await build(['--platform', 'linux/amd64,linux/arm64', '-o', `type=local,dest=${dest}`, '-o', `type=tar,dest=${tarFile}`], ctx);
    for (const arch of ['amd64', 'arm64']) {
      expect(readFileSync(join(dest, `linux_${arch}`, 'out.txt'), 'utf8')).toBe(`built on linux/${HOST_ARCH} for linux/${arch}\n`);
      expect(readFileSync(join(dest, `linux_${arch}`, 'base-arch'), 'utf8')).toBe(`${arch}\n`);
    }
    const listing = run('tar', ['-tf', tarFile]).stdout.split('\n');
    expect(listing).toEqual(expect.arrayContaining(['linux_amd64/', 'linux_amd64/out.txt', 'linux_arm64/', 'linux_arm64/out.txt']));
  }, 120_000);

  it.skipIf(!has('skopeo'))('type=image,push=true: the registry holds the index; skopeo --override-arch arm64 sees the arm64 image', async () => {
    const ctx = context('push', crossCompile());
    const ref = `${registry.host}/kiln-test/multi:pushed`;
    // --provenance=false: the two platform manifests alone (the default provenance adds one attestation manifest each).
    await build(['--platform', 'linux/amd64,linux/arm64', '--provenance=false', '-o', `type=image,name=${ref},push=true`], ctx);
    const raw = JSON.parse(run('skopeo', ['inspect', '--tls-verify=false', '--raw', `docker://${ref}`]).stdout) as { manifests: unknown[] };
    expect(raw.manifests).toHaveLength(2);
    const arm = run('skopeo', ['inspect', '--tls-verify=false', '--override-arch', 'arm64', `docker://${ref}`]);
    expect(arm.code, arm.stderr).toBe(0);
    expect((JSON.parse(arm.stdout) as { Architecture: string }).Architecture).toBe('arm64');
  }, 120_000);

  it('type=docker refuses a multi-platform build as buildx does; a RUN for a platform nothing runs names it', async () => {
    const ctx = context('errors', crossCompile());
    const docker = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '--platform', 'linux/amd64,linux/arm64', '-o', `type=docker,dest=${join(work, 'd.tar')}`, ctx]);
    expect(docker.code).toBe(1);
    expect(docker.stderr).toContain('docker exporter does not currently support exporting manifest lists');
    const exotic = emulates('riscv64') ? 's390x' : 'riscv64';
    const runCtx = context('unsupported', 'FROM scratch\nCOPY Dockerfile /\nRUN ["/bin/true"]\n');
    const res = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '--platform', `linux/amd64,linux/${exotic}`, runCtx]);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain(`no worker can run steps for platform linux/${exotic}`);
    expect(res.stderr).toContain('Dockerfile:3');
  }, 120_000);

  const canEmulate = () => HOST_ARCH === 'amd64' && emulates('aarch64');
  it('emulated RUN for arm64 through binfmt_misc (qemu-user-static), next to the native amd64 one', async (t) => {
    if (!canEmulate() || !armBusybox) t.skip(`needs qemu-aarch64 registered in binfmt_misc and ${ARM64_DEB} (see tools/setup.sh)`);
    const ctx = context('emulated', `FROM ${baseRef}\nARG TARGETARCH\nRUN uname -m > /machine && echo "$TARGETARCH" > /targetarch\n`);
    const dest = join(work, 'emulated-out');
    await build(['--platform', 'linux/amd64,linux/arm64', '-o', `type=local,dest=${dest}`], ctx);
    expect(readFileSync(join(dest, 'linux_amd64', 'machine'), 'utf8')).toBe('x86_64\n');
    expect(readFileSync(join(dest, 'linux_arm64', 'machine'), 'utf8')).toBe('aarch64\n');
    expect(readFileSync(join(dest, 'linux_arm64', 'targetarch'), 'utf8')).toBe('arm64\n');
  }, 180_000);
});
