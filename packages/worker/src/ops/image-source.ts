import { createHash } from 'node:crypto';
import { CanceledError, KilnError, UnimplementedError } from '@kiln/common';
import {
  distributionSourceLabel,
  formatReference,
  parseReference,
  withDistributionSource,
  resolveImage,
  type Descriptor,
  type ImageManifest,
  type Platform,
  type Reference,
  type RegistryClient,
} from '@kiln/registry';
import { applyLayer as applyLayerTar, type Snapshotter } from '@kiln/snapshotter';
import { teeToStore, type ContentClient } from '../layers/content-blobs.js';
import type { BaseLayer } from '../layers/lineage.js';
import { OpFailure } from './op-failure.js';
import { newSnapshotKey, type OpContext, type OpResult } from './op-context.js';

/**
 * The committed snapshots of image layers this worker has applied, by OCI
 * chain id. The store owns them (refs to them never remove them); concurrent
 * pulls of one chain apply it once. Each is committed with the label
 * `layerLabel(chainId)`, so a worker restarted on the same snapshotter root
 * finds its layers again instead of fetching them.
 */
export class LayerStore {
  private readonly chains = new Map<string, Promise<string>>();
  private readonly owned = new Set<string>();
  /** Config digest -> its rootfs.diff_ids. */
  private readonly diffIds = new Map<string, string[]>();

  constructor(private readonly snapshotter: Snapshotter) {}

  /** True when `id` is a layer snapshot of this store (not to be removed with a ref). */
  owns(id: string): boolean {
    return this.owned.has(id);
  }

  /**
   * The snapshot of `chainId`, made with `apply` unless it exists or is
   * being made. A failed (or canceled) apply is forgotten, so the next pull
   * tries again; a waiter whose own signal is live retries after another
   * caller's cancellation.
   */
  async get(chainId: string, apply: () => Promise<string>, signal?: AbortSignal): Promise<string> {
    for (;;) {
      const existing = this.chains.get(chainId);
      if (!existing) break;
      try {
        return await existing;
      } catch (err) {
        if (signal?.aborted || !isCancel(err)) throw err;
      }
    }
    const p = (async () => {
      const id = (await this.snapshotter.byLabel(layerLabel(chainId))) ?? (await apply());
      this.owned.add(id);
      return id;
    })();
    this.chains.set(chainId, p);
    p.catch(() => {
      if (this.chains.get(chainId) === p) this.chains.delete(chainId);
    });
    return p;
  }

  /** True when the chain's snapshot is committed or being made. */
  has(chainId: string): boolean {
    return this.chains.has(chainId);
  }

  cachedDiffIds(configDigest: string): string[] | undefined {
    return this.diffIds.get(configDigest);
  }

  rememberDiffIds(configDigest: string, ids: string[]): void {
    this.diffIds.set(configDigest, ids);
  }

  /** Forgets every layer and returns their snapshot ids (which persist: not for removal). */
  clear(): string[] {
    const ids = [...this.owned];
    this.owned.clear();
    this.chains.clear();
    this.diffIds.clear();
    return ids;
  }
}

/** The snapshot label of the layer snapshot of `chainId` (or "empty" for an image without layers). */
export function layerLabel(chainId: string): string {
  return `image-layer:${chainId}`;
}

function isCancel(err: unknown): boolean {
  return (err instanceof KilnError && err.code === 'canceled') || (err instanceof Error && err.name === 'AbortError');
}

/**
 * Where an image source's manifest and blobs come from: a registry
 * (`registryOrigin`) or a client's OCI layout (`layoutOrigin`). Blobs it
 * yields are checked against their digests.
 */
export interface ImageOrigin {
  /** Named in status events ("pulling NAME:") and errors. */
  readonly name: string;
  /** The image manifest for `platform`. */
  resolve(platform: Platform, signal?: AbortSignal): Promise<ImageManifest>;
  /** One blob's bytes, verified. */
  fetch(desc: Descriptor, signal?: AbortSignal): AsyncIterable<Uint8Array>;
  /** Runs after a successful pull (best effort, never fails it). */
  afterPull?(ctx: OpContext, layers: readonly Descriptor[]): Promise<void>;
}

/** `docker-image://REF` pulled from a registry; pulled layer blobs are labelled with their repository. */
export function registryOrigin(registry: RegistryClient, refString: string, content: ContentClient | undefined): ImageOrigin {
  const ref = parseReference(refString, 'identifier');
  return {
    name: formatReference(ref),
    resolve: async (platform, signal) => (await resolveImage(registry, ref, platform, signal)).manifest.manifest,
    fetch: (desc, signal) => registry.fetch(ref, desc, signal),
    afterPull: content ? (ctx, layers) => recordDistributionSource(ctx, content, ref, layers) : undefined,
  };
}

export interface ImageSourceParams {
  /** Where the image comes from. */
  origin: ImageOrigin;
  platform: Platform;
  layers: LayerStore;
  progressIntervalMs: number;
  /** Where pulled blobs are kept as they stream by (for layer export); none when absent. */
  content?: ContentClient;
  /** Told about each layer snapshot made, with the blob it came from. */
  onBaseLayer?: (snapshotId: string, layer: BaseLayer) => void;
}

/** The OCI chain id of a layer: its diff id for the first, else sha256(parent chain id + " " + diff id). */
export function chainIdOf(parent: string | undefined, diffId: string): string {
  if (parent === undefined) return diffId;
  return `sha256:${createHash('sha256').update(`${parent} ${diffId}`).digest('hex')}`;
}

type Compression = 'none' | 'gzip' | 'zstd';

/** How a layer of `mediaType` is compressed; UnimplementedError for unknown types. */
export function layerCompression(mediaType: string): Compression {
  const t = mediaType.toLowerCase();
  if (t.endsWith('+zstd') || t.endsWith('.zstd')) return 'zstd';
  if (t.endsWith('+gzip') || t.endsWith('.tar.gzip') || t.endsWith('.tar.gz')) return 'gzip';
  if (t.endsWith('.tar') || t.endsWith('.v1.tar')) return 'none';
  throw new UnimplementedError(`layer media type ${mediaType} is not supported`, { mediaType });
}

/**
 * `docker-image://REF`: resolves REF for the platform, reads the config's
 * diff ids and applies each layer (whiteouts included) onto a snapshot of
 * the layers below it, reusing layer snapshots this worker already has by
 * chain id. The result is the top layer's snapshot, owned by the LayerStore.
 * Publishes "pulling REF:" status events (compressed bytes in `current`).
 */
export async function runImageSource(ctx: OpContext, p: ImageSourceParams): Promise<OpResult> {
  const origin = p.origin;
  const name = origin.name;
  const statusId = `pulling ${name}:`;
  const startedMs = Date.now();
  let lastMs = startedMs;
  let fetched = 0;
  let total = 0;
  const onBytes = (n: number) => {
    fetched += n;
    const now = Date.now();
    if (now - lastMs < p.progressIntervalMs) return;
    lastMs = now;
    void ctx.progress.status({ id: statusId, name: statusId, current: fetched, total, startedMs });
  };
  try {
    const manifest = await origin.resolve(p.platform, ctx.signal);
    const layers = manifest.layers;
    const diffIds = await readDiffIds(ctx, p, manifest.config);
    if (diffIds.length !== layers.length) {
      throw new OpFailure(`failed to pull ${name}: the config has ${diffIds.length} diff ids for ${layers.length} layers`);
    }
    for (const l of layers) layerCompression(l.mediaType); // unsupported types fail before any work
    const chainIds: string[] = [];
    for (const d of diffIds) chainIds.push(chainIdOf(chainIds.at(-1), d));
    total = layers.reduce((n, l, i) => (p.layers.has(chainIds[i]!) ? n : n + l.size), 0);

    let parent: string | undefined;
    if (layers.length === 0) {
      parent = await p.layers.get('empty', () => emptySnapshot(ctx), ctx.signal);
    }
    for (const [i, layer] of layers.entries()) {
      const below = parent;
      parent = await p.layers.get(
        chainIds[i]!,
        async () => {
          const id = await applyLayer(ctx, origin, layer, diffIds[i]!, below, onBytes, chainIds[i]!, p.content);
          const { digest, size, mediaType } = layer;
          p.onBaseLayer?.(id, { digest, size, mediaType, diffId: diffIds[i]!, fetch: (signal) => origin.fetch(layer, signal) });
          return id;
        },
        ctx.signal,
      );
    }
    await origin.afterPull?.(ctx, layers);
    await ctx.progress.status({ id: statusId, name: statusId, current: fetched, total, startedMs, completedMs: Date.now() });
    return [parent!];
  } catch (err) {
    if (ctx.signal?.aborted) throw new CanceledError(`pull of ${name} canceled`, { cause: err });
    if (err instanceof KilnError || err instanceof OpFailure) throw err;
    throw OpFailure.wrap(`failed to pull ${name}`, err);
  }
}

/**
 * Labels the pulled layer blobs in the content store with the repository
 * they came from (`containerd.io/distribution.source.<host>`), so a push to
 * another repository of that registry mounts them instead of uploading.
 * Blobs the store does not hold are skipped; failures are logged only.
 */
async function recordDistributionSource(ctx: OpContext, content: ContentClient, ref: Reference, layers: readonly Descriptor[]): Promise<void> {
  const key = distributionSourceLabel(ref.domain);
  await Promise.all(
    [...new Set(layers.map((l) => l.digest))].map(async (digest) => {
      try {
        const { info } = await content.info({ digest }, { signal: ctx.signal });
        const value = withDistributionSource(info?.labels[key], ref.path);
        if (value) await content.updateLabels({ digest, labels: { [key]: value } }, { signal: ctx.signal });
      } catch (err) {
        if (err instanceof KilnError && err.code === 'not_found') return;
        ctx.logger.warn({ err, digest }, 'failed to record where a pulled blob came from');
      }
    }),
  );
}

async function readDiffIds(ctx: OpContext, p: ImageSourceParams, config: Descriptor): Promise<string[]> {
  const cached = p.layers.cachedDiffIds(config.digest);
  if (cached) return cached;
  const parts: Uint8Array[] = [];
  for await (const chunk of p.origin.fetch(config, ctx.signal)) parts.push(chunk);
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.concat(parts).toString('utf8'));
  } catch {
    throw new OpFailure(`failed to pull ${p.origin.name}: image config ${config.digest} is not valid JSON`);
  }
  const ids = (doc as { rootfs?: { diff_ids?: unknown } } | null)?.rootfs?.diff_ids;
  if (!Array.isArray(ids) || !ids.every((d) => typeof d === 'string' && /^sha256:[0-9a-f]{64}$/.test(d))) {
    throw new OpFailure(`failed to pull ${p.origin.name}: image config ${config.digest} has no valid rootfs.diff_ids`);
  }
  p.layers.rememberDiffIds(config.digest, ids as string[]);
  return ids as string[];
}

async function emptySnapshot(ctx: OpContext): Promise<string> {
  const key = newSnapshotKey(ctx.digest, 'image-empty');
  await ctx.snapshotter.prepare(key, undefined, { signal: ctx.signal });
  try {
    return await ctx.snapshotter.commit(key, { label: layerLabel('empty') });
  } catch (err) {
    await ctx.snapshotter.remove(key).catch(() => undefined);
    throw err;
  }
}

/** Applies one layer onto a snapshot of `parent`, checking its uncompressed digest against `diffId`; returns the committed id. */
async function applyLayer(
  ctx: OpContext,
  origin: ImageOrigin,
  layer: Descriptor,
  diffId: string,
  parent: string | undefined,
  onBytes: (n: number) => void,
  chainId: string,
  content: ContentClient | undefined,
): Promise<string> {
  const key = newSnapshotKey(ctx.digest, 'layer');
  const active = await ctx.snapshotter.prepare(key, parent, { signal: ctx.signal });
  try {
    const compressed = teeToStore(counted(origin.fetch(layer, ctx.signal), onBytes), content, layer, ctx.logger);
    let got: string;
    try {
      // Compression is told by the bytes, not the media type: registries mislabel layers.
      got = (await applyLayerTar(active.path, compressed, { signal: ctx.signal, logger: ctx.logger })).diffId;
    } catch (err) {
      if (err instanceof KilnError) throw err;
      throw OpFailure.wrap(`failed to apply layer ${layer.digest} of ${origin.name}`, err);
    }
    if (got !== diffId) {
      throw new OpFailure(`failed to apply layer ${layer.digest} of ${origin.name}: uncompressed digest ${got} does not match diff id ${diffId}`);
    }
    return await ctx.snapshotter.commit(key, { label: layerLabel(chainId) });
  } catch (err) {
    await ctx.snapshotter.remove(key).catch(() => undefined);
    throw err;
  }
}

async function* counted(src: AsyncIterable<Uint8Array>, onBytes: (n: number) => void): AsyncGenerator<Uint8Array> {
  for await (const chunk of src) {
    onBytes(chunk.byteLength);
    yield chunk;
  }
}
