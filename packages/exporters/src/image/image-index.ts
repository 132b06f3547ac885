import { InvalidArgumentError } from '@kiln/common';
import { MediaType, type Descriptor } from '@kiln/registry';
import type { ExporterContext, ExportSource } from '../exporter.js';
import { assembleImage, sortedRecord, type AssembledImage } from './assemble.js';
import type { BlobStore } from './blob-store.js';
import { compileImageOptions, type ImageOptions } from './image-options.js';

/** What an image export made: one image, or an image index over one image per platform. */
export interface ExportedImage {
  /** The object names point at: the image manifest, or the index. */
  top: { descriptor: Descriptor; bytes: Buffer };
  /** The images, in build order (one for a single-platform build). */
  images: AssembledImage[];
  isIndex: boolean;
  /** Attestation manifests listed in the index (see attestations.ts), pushed by digest like the images. */
  attestations?: AssembledImage[];
}

/** Content-store labels that make an index reach its manifests in GC. */
function indexRefLabels(manifests: readonly Descriptor[]): Record<string, string> {
  return Object.fromEntries(manifests.map((m, i) => [`containerd.io/gc.ref.content.m.${i}`, m.digest]));
}

/**
 * Assembles the build's image: for a single-platform build the image
 * itself; for a multi-platform one an image per platform (each with its
 * own `annotation[PLATFORM].KEY` attrs) and an index over them (OCI index,
 * or Docker manifest list without OCI media types) with each manifest's
 * platform, `annotation-manifest-descriptor.*` on the entries and
 * `annotation-index.*` on the index. Everything is written under `lease`.
 */
export async function assembleExport(
  src: ExportSource,
  store: BlobStore,
  attrs: Record<string, string>,
  opts: ImageOptions & { ociDefault: boolean },
  lease: string,
  ctx: Pick<ExporterContext, 'signal' | 'logger'>,
): Promise<ExportedImage> {
  if (!src.platforms?.length) {
    const image = await assembleImage(src, store, opts, lease, ctx);
    return { top: image.manifest, images: [image], isIndex: false };
  }
  if (!opts.ociMediaTypes && Object.keys(opts.annotations.index).length > 0) {
    throw new InvalidArgumentError('index annotations need OCI media types (oci-mediatypes=true)', 'oci-mediatypes');
  }
  const perPlatform = src.platforms.map((p) => ({ src: p, opts: compileImageOptions(attrs, { ociDefault: opts.ociDefault, platform: p.platform }) }));
  const images = await Promise.all(perPlatform.map((p) => assembleImage(p.src, store, p.opts, lease, ctx)));
  const manifests: Descriptor[] = images.map((image, i) => {
    const annotations = perPlatform[i]!.opts.annotations.manifestDescriptor;
    return {
      ...image.manifest.descriptor,
      platform: { architecture: image.platform.architecture, os: image.platform.os, ...(image.platform.variant ? { variant: image.platform.variant } : {}) },
      ...(Object.keys(annotations).length > 0 ? { annotations: sortedRecord(annotations) } : {}),
    };
  });
  const index: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: opts.ociMediaTypes ? MediaType.OciIndex : MediaType.DockerManifestList,
    manifests,
  };
  if (Object.keys(opts.annotations.index).length > 0) index.annotations = sortedRecord(opts.annotations.index);
  const bytes = Buffer.from(JSON.stringify(index));
  const blob = await store.put(bytes, { lease, labels: indexRefLabels(manifests) }, ctx.signal);
  return { top: { descriptor: { mediaType: index.mediaType as string, digest: blob.digest, size: blob.size }, bytes }, images, isIndex: true };
}

/** The exporter response keys --metadata-file records (as BuildKit's image exporters return them; an index has no config). */
export function exportResponse(exported: ExportedImage, names: readonly string[]): Record<string, string> {
  const res: Record<string, string> = {
    'containerimage.digest': exported.top.descriptor.digest,
    'containerimage.descriptor': Buffer.from(JSON.stringify(exported.top.descriptor)).toString('base64'),
  };
  // One image (an index only because attestations were attached): its config digest is still the image id.
  if (exported.images.length === 1) res['containerimage.config.digest'] = exported.images[0]!.config.descriptor.digest;
  if (names.length > 0) res['image.name'] = names.join(',');
  return res;
}
