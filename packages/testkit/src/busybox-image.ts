import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import type { TestRegistry } from './registry.js';

const sha256 = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

export interface BusyboxLayerOptions {
  /** The static busybox binary put at /bin/busybox; default Debian's `/bin/busybox`. */
  binary?: string;
  /** Names linked to busybox in /bin: a list, or `'all'` for every applet the binary lists; default sh, echo, cat. */
  applets?: readonly string[] | 'all';
  /** Extra empty directories at the root (e.g. `tmp`). */
  dirs?: readonly string[];
}

export interface BusyboxLayer {
  /** The uncompressed layer (GNU tar, sorted, numeric owner 0, mtime 0: the same bytes every time). */
  tar: Buffer;
  gz: Buffer;
  diffId: string;
  digest: string;
}

/** A one-layer busybox root filesystem, built with GNU tar in a temp dir under `work`. */
export function busyboxLayer(work: string, opts: BusyboxLayerOptions = {}): BusyboxLayer {
  const binary = opts.binary ?? '/bin/busybox';
  const tree = mkdtempSync(join(work, 'busybox-layer-'));
  try {
    mkdirSync(join(tree, 'bin'));
    for (const d of opts.dirs ?? []) mkdirSync(join(tree, d), { recursive: true });
    copyFileSync(binary, join(tree, 'bin', 'busybox'));
    chmodSync(join(tree, 'bin', 'busybox'), 0o755);
    const applets =
      opts.applets === 'all'
        ? execFileSync(binary, ['--list'], { encoding: 'utf8' })
            .split('\n')
            .filter((a) => a && a !== 'busybox')
        : (opts.applets ?? ['sh', 'echo', 'cat']);
    for (const a of applets) symlinkSync('busybox', join(tree, 'bin', a));
    const tops = ['bin', ...(opts.dirs ?? []).map((d) => d.split('/')[0]!)].filter((d, i, all) => all.indexOf(d) === i);
    const tar = execFileSync('tar', ['--numeric-owner', '--owner=0', '--group=0', '--mtime=@0', '--sort=name', '-C', tree, '-cf', '-', ...tops], { maxBuffer: 64 << 20 });
    const gz = gzipSync(tar);
    return { tar, gz, diffId: sha256(tar), digest: sha256(gz) };
  } finally {
    rmSync(tree, { recursive: true, force: true });
  }
}

/** Pushes a blob with a monolithic upload (POST, then PUT ?digest=); `authorization` is sent as is. */
export async function pushBlob(registry: Pick<TestRegistry, 'url'>, repo: string, data: Buffer, authorization?: string): Promise<string> {
  const auth: Record<string, string> = authorization ? { authorization } : {};
  const start = await fetch(`${registry.url}/v2/${repo}/blobs/uploads/`, { method: 'POST', headers: auth });
  if (start.status !== 202) throw new Error(`upload start to ${repo}: HTTP ${start.status}`);
  const digest = sha256(data);
  const loc = new URL(start.headers.get('location')!, registry.url);
  loc.searchParams.set('digest', digest);
  const put = await fetch(loc, { method: 'PUT', body: data, headers: { 'content-type': 'application/octet-stream', ...auth } });
  if (put.status !== 201) throw new Error(`upload to ${repo}: HTTP ${put.status} ${await put.text()}`);
  return digest;
}

export interface PushBusyboxOptions extends BusyboxLayerOptions {
  /** Authorization header for a registry with auth (e.g. `Basic ...`). */
  authorization?: string;
  /** Image config `architecture`; default the host's (amd64 or arm64). */
  architecture?: string;
}

export interface PushedBusybox {
  /** `host:port/repo:tag`. */
  ref: string;
  layer: BusyboxLayer;
  manifestDigest: string;
}

/** Pushes a one-layer busybox image (Env PATH=/bin, Cmd /bin/sh, OCI media types) as `repo:tag`. */
export async function pushBusyboxImage(registry: Pick<TestRegistry, 'url' | 'host'>, work: string, repo: string, tag: string, opts: PushBusyboxOptions = {}): Promise<PushedBusybox> {
  const layer = busyboxLayer(work, opts);
  const config = Buffer.from(
    JSON.stringify({
      architecture: opts.architecture ?? (process.arch === 'arm64' ? 'arm64' : 'amd64'),
      os: 'linux',
      config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: [layer.diffId] },
    }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layer.digest, size: layer.gz.length }],
    }),
  );
  await pushBlob(registry, repo, layer.gz, opts.authorization);
  await pushBlob(registry, repo, config, opts.authorization);
  const auth: Record<string, string> = opts.authorization ? { authorization: opts.authorization } : {};
  const put = await fetch(`${registry.url}/v2/${repo}/manifests/${tag}`, {
    method: 'PUT',
    body: manifest,
    headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json', ...auth },
  });
  if (put.status !== 201) throw new Error(`manifest ${repo}:${tag}: HTTP ${put.status} ${await put.text()}`);
  return { ref: `${registry.host}/${repo}:${tag}`, layer, manifestDigest: sha256(manifest) };
}
