import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findRegistry, runKiln, startKilnd, startRegistry, type Kilnd, type TestRegistry } from '@kiln/testkit';

const BUSYBOX = '/bin/busybox';
const sha = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Pushes a blob with a monolithic upload (POST, then PUT ?digest=). */
async function pushBlob(registry: TestRegistry, repo: string, data: Buffer): Promise<void> {
  const start = await fetch(`${registry.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  if (start.status !== 202) throw new Error(`upload start: HTTP ${start.status}`);
  const loc = new URL(start.headers.get('location')!, registry.url);
  loc.searchParams.set('digest', sha(data));
  const put = await fetch(loc, { method: 'PUT', body: data, headers: { 'content-type': 'application/octet-stream' } });
  if (put.status !== 201) throw new Error(`upload: HTTP ${put.status} ${await put.text()}`);
}

/** A gzip layer of /bin/busybox with /bin/sh, /bin/echo, /bin/ls, /bin/cat as symlinks to it (Debian's busybox-static). */
function busyboxLayer(work: string): { gz: Buffer; diffId: string } {
  const tree = join(work, 'layer');
  mkdirSync(join(tree, 'bin'), { recursive: true });
  copyFileSync(BUSYBOX, join(tree, 'bin', 'busybox'));
  chmodSync(join(tree, 'bin', 'busybox'), 0o755);
  for (const name of ['sh', 'echo', 'ls', 'cat']) symlinkSync('busybox', join(tree, 'bin', name));
  const tar = execFileSync('tar', ['--numeric-owner', '--owner=0', '--group=0', '-C', tree, '-cf', '-', 'bin'], { maxBuffer: 64 << 20 });
  return { gz: gzipSync(tar), diffId: sha(tar) };
}

describe.skipIf(!findRegistry() || !existsSync(BUSYBOX))('FROM an image in a registry [topology=all-in-one, worker=oci]', () => {
  let registry: TestRegistry;
  let daemon: Kilnd;
  let ctx: string;
  let imageRef: string;

  beforeAll(async () => {
    registry = await startRegistry();
    ctx = mkdtempSync(join(tmpdir(), 'kiln-image-source-'));
    const repo = 'kiln/busybox';
    const layer = busyboxLayer(ctx);
    const config = Buffer.from(
      JSON.stringify({
        architecture: process.arch === 'arm64' ? 'arm64' : 'amd64',
        os: 'linux',
        config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'] },
        rootfs: { type: 'layers', diff_ids: [layer.diffId] },
      }),
    );
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
    const put = await fetch(`${registry.url}/v2/${repo}/manifests/1`, {
      method: 'PUT',
      body: manifest,
      headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
    });
    if (put.status !== 201) throw new Error(`manifest: HTTP ${put.status} ${await put.text()}`);
    imageRef = `${registry.host}/${repo}:1`;
    daemon = await startKilnd({ worker: 'oci' });
    writeFileSync(join(ctx, 'Dockerfile'), `FROM ${imageRef}\nRUN echo hi > /hi.txt\n`);
  }, 60_000);

  afterAll(async () => {
    await daemon?.stop();
    await registry?.stop();
    if (ctx) rmSync(ctx, { recursive: true, force: true });
  });

  it('pulls the base image and runs a step on it', async () => {
    const out = join(ctx, 'out');
    const res = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '-o', `type=local,dest=${out}`, ctx]);
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
    expect(readFileSync(join(out, 'hi.txt'), 'utf8')).toBe('hi\n');
    expect(statSync(join(out, 'bin', 'busybox')).isFile()).toBe(true);
    expect(res.stderr).toContain(`pulling ${imageRef}`);
  }, 60_000);

  it('fails a missing tag naming the reference', async () => {
    const bad = mkdtempSync(join(tmpdir(), 'kiln-image-source-bad-'));
    try {
      const missing = `${registry.host}/kiln/busybox:nope`;
      writeFileSync(join(bad, 'Dockerfile'), `FROM ${missing}\n`);
      const res = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '-o', `type=local,dest=${join(bad, 'out')}`, bad]);
      expect(res.code).toBe(1);
      expect(res.stderr).toContain(missing);
    } finally {
      rmSync(bad, { recursive: true, force: true });
    }
  }, 60_000);
});
