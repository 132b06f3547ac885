import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { encodeTarHeader, tarPadding, tarTrailer } from '@kiln/common';

/** A blob of a test image with its descriptor (shaped like an OCI descriptor). */
export interface TestBlob {
  descriptor: { mediaType: string; digest: string; size: number; platform?: TestPlatform };
  data: Buffer;
}

export interface TestPlatform {
  os: string;
  architecture: string;
  variant?: string;
}

/** A single-platform image: gzip layers, config, manifest. */
export interface TestImage {
  platform: TestPlatform;
  layers: TestBlob[];
  config: TestBlob;
  /** The manifest; its descriptor carries the platform. */
  manifest: TestBlob;
  /** Layers then config: what to push before the manifest. */
  blobs: TestBlob[];
}

/** A multi-platform image: an index over images. */
export interface TestIndex {
  index: TestBlob;
  images: TestImage[];
}

export type TestImageFormat = 'oci' | 'docker';

const TYPES = {
  oci: {
    manifest: 'application/vnd.oci.image.manifest.v1+json',
    index: 'application/vnd.oci.image.index.v1+json',
    config: 'application/vnd.oci.image.config.v1+json',
    layer: 'application/vnd.oci.image.layer.v1.tar+gzip',
  },
  docker: {
    manifest: 'application/vnd.docker.distribution.manifest.v2+json',
    index: 'application/vnd.docker.distribution.manifest.list.v2+json',
    config: 'application/vnd.docker.container.image.v1+json',
    layer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  },
} as const;

const digestOf = (data: Uint8Array) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

function blob(mediaType: string, data: Buffer): TestBlob {
  return { descriptor: { mediaType, digest: digestOf(data), size: data.length }, data };
}

/** An uncompressed tar of `files` (path -> content), deterministic. */
export function makeTar(files: Record<string, string | Uint8Array>): Buffer {
  const parts: Buffer[] = [];
  for (const [name, content] of Object.entries(files).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const body = typeof content === 'string' ? Buffer.from(content) : Buffer.from(content);
    parts.push(encodeTarHeader({ name, size: body.length, mode: 0o644, mtime: 0 }), body, tarPadding(body.length));
  }
  parts.push(tarTrailer());
  return Buffer.concat(parts);
}

/** A gzip layer of `files`; `diffId` is the digest of the uncompressed tar. */
export function makeLayer(files: Record<string, string | Uint8Array>, format: TestImageFormat = 'oci'): TestBlob & { diffId: string } {
  const tar = makeTar(files);
  return { ...blob(TYPES[format].layer, gzipSync(tar)), diffId: digestOf(tar) };
}

function parsePlatform(p: string | TestPlatform): TestPlatform {
  if (typeof p !== 'string') return p;
  const [os = 'linux', architecture = 'amd64', variant] = p.split('/');
  return variant ? { os, architecture, variant } : { os, architecture };
}

/**
 * A tiny image: one layer per entry of `layers` (default one layer with
 * `/hello.txt` naming the platform), a config with the platform and diff
 * ids, and a manifest. OCI media types by default, Docker schema 2 with
 * `format: 'docker'`.
 */
export function makeImage(
  opts: { platform?: string | TestPlatform; layers?: Record<string, string | Uint8Array>[]; format?: TestImageFormat; cmd?: string[] } = {},
): TestImage {
  const format = opts.format ?? 'oci';
  const platform = parsePlatform(opts.platform ?? 'linux/amd64');
  const name = `${platform.os}/${platform.architecture}${platform.variant ? `/${platform.variant}` : ''}`;
  const layers = (opts.layers ?? [{ 'hello.txt': `hello from ${name}\n` }]).map((files) => makeLayer(files, format));
  const config = blob(
    TYPES[format].config,
    Buffer.from(
      JSON.stringify({
        created: '2024-01-01T00:00:00Z',
        architecture: platform.architecture,
        os: platform.os,
        ...(platform.variant ? { variant: platform.variant } : {}),
        config: { Cmd: opts.cmd ?? ['/bin/sh'], Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'] },
        rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
        history: layers.map(() => ({ created: '2024-01-01T00:00:00Z', created_by: 'kiln testkit' })),
      }),
    ),
  );
  const manifest = blob(
    TYPES[format].manifest,
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: TYPES[format].manifest,
        config: config.descriptor,
        layers: layers.map((l) => l.descriptor),
      }),
    ),
  );
  manifest.descriptor.platform = platform;
  const plainLayers = layers.map(({ descriptor, data }) => ({ descriptor, data }));
  return { platform, layers: plainLayers, config, manifest, blobs: [...plainLayers, config] };
}

/** An index (OCI) or manifest list (Docker) over `images`, each entry carrying its platform. */
export function makeIndex(images: TestImage[], format: TestImageFormat = 'oci'): TestIndex {
  const index = blob(
    TYPES[format].index,
    Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: TYPES[format].index, manifests: images.map((i) => i.manifest.descriptor) })),
  );
  return { index, images };
}
