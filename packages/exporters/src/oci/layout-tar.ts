import { encodeTarHeader, KilnError, tarPadding, tarTrailer } from '@kiln/common';
import { MediaType, parseReference, type Descriptor } from '@kiln/registry';
import { sortedRecord, type AssembledImage } from '../image/assemble.js';
import type { ExportedImage } from '../image/image-index.js';
import type { BlobStore } from '../image/blob-store.js';
import type { BlobSpan, OutputChunk } from '../exporter.js';
import { blobSizeMismatch } from '../output-chunks.js';

export type LayoutFormat = 'oci' | 'docker';

export interface LayoutOptions {
  /** `oci`: an OCI image layout; `docker`: the same plus the manifest.json `docker load` reads. */
  format: LayoutFormat;
  /** Image names as given (`name=`). */
  names: readonly string[];
  /** Annotations on each descriptor in index.json (of the manifest, or of the image index). */
  descriptorAnnotations: Record<string, string>;
  /** Annotations on index.json itself. */
  indexAnnotations: Record<string, string>;
  /** `org.opencontainers.image.created` on the descriptors (RFC 3339). */
  created: string;
}

/** "docker.io/library/foo:latest" -> "foo:latest": the form docker shows (and RepoTags holds). */
export function familiarName(name: string): string {
  const ref = parseReference(name, 'name');
  let path = `${ref.domain}/${ref.path}`;
  if (ref.domain === 'docker.io') path = ref.path.startsWith('library/') && ref.path.split('/').length === 2 ? ref.path.slice('library/'.length) : ref.path;
  return `${path}${ref.tag ? `:${ref.tag}` : ''}`;
}

/** "foo" -> "docker.io/library/foo:latest". */
export function normalizedName(name: string): string {
  const ref = parseReference(name, 'name');
  return `${ref.domain}/${ref.path}${ref.tag ? `:${ref.tag}` : ''}${ref.digest ? `@${ref.digest}` : ''}`;
}

function blobPath(digest: string): string {
  const [alg, hex] = digest.split(':');
  return `blobs/${alg}/${hex}`;
}

/** index.json of the layout: one descriptor of the image (manifest or index) per name (one without a name when there is none). */
export function layoutIndex(image: ExportedImage, opts: LayoutOptions): Buffer {
  const descriptorFor = (name: string | undefined): Descriptor => {
    const annotations: Record<string, string> = { ...opts.descriptorAnnotations, 'org.opencontainers.image.created': opts.created };
    if (name !== undefined) {
      const ref = parseReference(name, 'name');
      annotations['io.containerd.image.name'] = normalizedName(name);
      annotations['org.opencontainers.image.ref.name'] = ref.tag ?? normalizedName(name);
    }
    return { ...image.top.descriptor, annotations: sortedRecord(annotations) };
  };
  const names = [...new Set(opts.names.map(normalizedName))];
  const index: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: MediaType.OciIndex,
    manifests: names.length > 0 ? names.map(descriptorFor) : [descriptorFor(undefined)],
  };
  if (Object.keys(opts.indexAnnotations).length > 0) index.annotations = sortedRecord(opts.indexAnnotations);
  return Buffer.from(JSON.stringify(index));
}

/** manifest.json for `docker load`. */
export function dockerManifestJson(image: AssembledImage, names: readonly string[]): Buffer {
  return Buffer.from(
    JSON.stringify([
      {
        Config: blobPath(image.config.descriptor.digest),
        RepoTags: [...new Set(names.map(familiarName))],
        Layers: image.layers.map((l) => blobPath(l.digest)),
      },
    ]),
  );
}

/**
 * The image as a tar stream: an OCI image layout (`oci-layout`,
 * `index.json`, `blobs/<alg>/<hex>`: the image index when there is one,
 * each image's manifest, config and layers), plus `manifest.json` for the
 * docker format (single-platform images only). Entries are in name order with mtime 0, owner 0:0, so the same
 * image and options give the same bytes. Layer blobs are `BlobSpan`s: read
 * from the store, or copied from its file by a local write; a blob whose
 * size differs from its descriptor fails the export.
 */
export async function* layoutTar(exported: ExportedImage, store: BlobStore, opts: LayoutOptions, signal?: AbortSignal): AsyncIterable<OutputChunk> {
  const small = new Map<string, Buffer>([
    ['oci-layout', Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' }))],
    ['index.json', layoutIndex(exported, opts)],
  ]);
  if (opts.format === 'docker') small.set('manifest.json', dockerManifestJson(exported.images[0]!, opts.names));
  const blobs = new Map<string, { size: number; data?: Buffer }>();
  blobs.set(exported.top.descriptor.digest, { size: exported.top.bytes.length, data: exported.top.bytes });
  for (const image of [...exported.images, ...(exported.attestations ?? [])]) {
    blobs.set(image.manifest.descriptor.digest, { size: image.manifest.bytes.length, data: image.manifest.bytes });
    blobs.set(image.config.descriptor.digest, { size: image.config.bytes.length, data: image.config.bytes });
    for (const l of image.layers) blobs.set(l.digest, { size: l.size });
  }

  const entries: { name: string; kind: 'dir' | 'small' | 'blob'; digest?: string }[] = [
    { name: 'blobs/', kind: 'dir' },
    ...[...new Set([...blobs.keys()].map((d) => d.split(':')[0]!))].map((alg) => ({ name: `blobs/${alg}/`, kind: 'dir' as const })),
    ...[...blobs.keys()].map((digest) => ({ name: blobPath(digest), kind: 'blob' as const, digest })),
    ...[...small.keys()].map((name) => ({ name, kind: 'small' as const })),
  ];
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));

  for (const e of entries) {
    if (e.kind === 'dir') {
      yield encodeTarHeader({ name: e.name, type: 'directory', mode: 0o755, mtime: 0 });
    } else if (e.kind === 'small') {
      const data = small.get(e.name)!;
      yield Buffer.concat([encodeTarHeader({ name: e.name, mode: 0o644, size: data.length, mtime: 0 }), data, tarPadding(data.length)]);
    } else {
      const blob = blobs.get(e.digest!)!;
      yield encodeTarHeader({ name: e.name, mode: 0o644, size: blob.size, mtime: 0 });
      if (blob.data) yield blob.data;
      else yield blobSpan(store, e.digest!, blob.size, signal);
      yield tarPadding(blob.size);
    }
  }
  yield tarTrailer();
}

/** A layer blob in the tar: streamed from the store, or its file when the store is in this process. */
function blobSpan(store: BlobStore, digest: string, size: number, signal?: AbortSignal): BlobSpan {
  const openFile = store.openFile;
  return {
    kind: 'blob',
    digest,
    size,
    async *read() {
      let n = 0;
      for await (const chunk of store.read(digest, signal)) {
        n += chunk.length;
        if (n > size) break;
        yield chunk;
      }
      if (n !== size) throw blobSizeMismatch(digest, n, size);
    },
    ...(openFile ? { open: () => openFile(digest) } : {}),
  };
}
