import { InvalidArgumentError, KilnError, sha256 } from '@kiln/common';
import { MediaType, type Descriptor } from '@kiln/registry';
import type { ExporterContext, ResultSource } from '../exporter.js';
import type { BlobStore } from './blob-store.js';
import { buildImageConfig } from './image-config.js';
import type { ImageOptions } from './image-options.js';
import type { LayerDescriptor } from './layers.js';

/** A single-platform image whose blobs are all in the content store (under the export's lease). */
export interface AssembledImage {
  manifest: { descriptor: Descriptor; bytes: Buffer };
  config: { descriptor: Descriptor; bytes: Buffer };
  layers: LayerDescriptor[];
  /** The platform from the config (for index descriptors). */
  platform: { os: string; architecture: string; variant?: string };
}

/** Content-store labels that make a manifest reach its config and layers in GC. */
export function manifestRefLabels(config: Descriptor, layers: readonly Descriptor[]): Record<string, string> {
  const labels: Record<string, string> = { 'containerd.io/gc.ref.content.config': config.digest };
  layers.forEach((l, i) => (labels[`containerd.io/gc.ref.content.l.${i}`] = l.digest));
  return labels;
}

/** Layer descriptor annotation (BuildKit's name): the SOURCE_DATE_EPOCH the layer's file times were clamped to. */
export const REWRITTEN_TIMESTAMP_ANNOTATION = 'buildkit/rewritten-timestamp';

const DOCKER_LAYER_OF: Record<string, string> = {
  [MediaType.OciLayerGzip]: MediaType.DockerLayer,
  [MediaType.OciLayer]: 'application/vnd.docker.image.rootfs.diff.tar',
};
const OCI_LAYER_OF: Record<string, string> = Object.fromEntries(Object.entries(DOCKER_LAYER_OF).map(([oci, docker]) => [docker, oci]));

/** A layer media type in the family the manifest uses (same bytes: only the name differs; zstd has no Docker name). */
export function layerMediaType(mediaType: string, oci: boolean): string {
  return (oci ? OCI_LAYER_OF[mediaType] : DOCKER_LAYER_OF[mediaType]) ?? mediaType;
}

/**
 * Assembles the result into an image: layers from the worker
 * (WorkerService.GetLayers, written to the content store under `lease`),
 * the image config from the frontend's, and the manifest. Config and
 * manifest are written under the same lease; the manifest carries
 * gc.ref labels to its config and layers.
 */
export async function assembleImage(src: ResultSource, store: BlobStore, opts: ImageOptions, lease: string, ctx: Pick<ExporterContext, 'signal' | 'logger'>): Promise<AssembledImage> {
  if (!opts.ociMediaTypes && Object.keys(opts.annotations.manifest).length > 0) {
    throw new InvalidArgumentError('manifest annotations need OCI media types (oci-mediatypes=true)', 'oci-mediatypes');
  }
  if (opts.rewriteTimestamp && opts.sourceDateEpoch === undefined) {
    ctx.logger.warn('rewrite-timestamp=true has no effect without SOURCE_DATE_EPOCH');
  }
  const layers = await src.getLayers(
    {
      compression: opts.compression,
      compressionLevel: opts.compressionLevel,
      forceCompression: opts.forceCompression,
      ociMediaTypes: opts.ociMediaTypes,
      sourceDateEpoch: opts.rewriteTimestamp ? opts.sourceDateEpoch : undefined,
      lease,
    },
    ctx.signal,
  );
  const config = buildImageConfig(src.imageConfig, layers, { nowSeconds: Math.floor(Date.now() / 1000), sourceDateEpoch: opts.sourceDateEpoch });
  const configBytes = Buffer.from(JSON.stringify(config));
  // The config's digest is known before it is written (the store checks the bytes against it), so
  // config and manifest are written at once: each write is a chain of durable steps (file fsync,
  // rename, directory fsync, metadata commit), tens of ms on a busy disk, and both are under the lease.
  const configDesc: Descriptor = { mediaType: opts.ociMediaTypes ? MediaType.OciConfig : MediaType.DockerConfig, digest: sha256(configBytes), size: configBytes.length };
  const configWrite = store.put(configBytes, { lease }, ctx.signal);
  configWrite.catch(() => undefined); // awaited below; a throw before that must not leave it unhandled
  // BuildKit's marker on each layer whose file times were rewritten: the ones the worker made with the
  // epoch, not the base image's nor those imported from a cache (their blobs are kept as they came).
  const rewritten = opts.rewriteTimestamp && opts.sourceDateEpoch !== undefined ? { [REWRITTEN_TIMESTAMP_ANNOTATION]: String(opts.sourceDateEpoch) } : undefined;
  const layerDescs: Descriptor[] = layers.map((l) => ({
    mediaType: layerMediaType(l.mediaType, opts.ociMediaTypes),
    digest: l.digest,
    size: l.size,
    ...(rewritten && l.timestampsRewritten ? { annotations: { ...rewritten } } : {}),
  }));
  const manifest: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: opts.ociMediaTypes ? MediaType.OciManifest : MediaType.DockerManifest,
    config: configDesc,
    layers: layerDescs,
  };
  if (Object.keys(opts.annotations.manifest).length > 0) manifest.annotations = sortedRecord(opts.annotations.manifest);
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const [configBlob, manifestBlob] = await Promise.all([configWrite, store.put(manifestBytes, { lease, labels: manifestRefLabels(configDesc, layerDescs) }, ctx.signal)]);
  if (configBlob.digest !== configDesc.digest) throw new KilnError('internal', `image config stored as ${configBlob.digest}, not ${configDesc.digest}`);
  const platform = {
    os: String(config.os),
    architecture: String(config.architecture),
    ...(typeof config.variant === 'string' ? { variant: config.variant } : {}),
  };
  return {
    manifest: { descriptor: { mediaType: manifest.mediaType as string, digest: manifestBlob.digest, size: manifestBlob.size }, bytes: manifestBytes },
    config: { descriptor: configDesc, bytes: configBytes },
    layers: layers.map((l, i) => ({ ...l, mediaType: layerDescs[i]!.mediaType })),
    platform,
  };
}

/** A copy with keys in code-point order (stable JSON). */
export function sortedRecord(r: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(r).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/**
 * Runs `fn` with a fresh content-store lease for this export, deleting it
 * afterwards (what must outlive the export is labelled as a GC root by `fn`).
 * The delete is not awaited: nothing in the result needs the lease any more,
 * and it is a durable (fsynced) write in the content store, which cost the
 * export's answer 3-90 ms on a busy disk; a lease whose delete fails expires
 * within the hour.
 */
export async function withExportLease<T>(store: BlobStore, buildId: string, signal: AbortSignal | undefined, fn: (lease: string) => Promise<T>): Promise<T> {
  const lease = await store.createLease({ 'kiln.export.build': buildId }, 60 * 60 * 1000, signal);
  try {
    return await fn(lease);
  } finally {
    void store.deleteLease(lease).catch(() => undefined);
  }
}
