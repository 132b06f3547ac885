import { randomBytes } from 'node:crypto';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import type { Client } from '@connectrpc/connect';
import type { content, control } from '@kiln/api';
import { InvalidArgumentError, UnimplementedError, type Logger } from '@kiln/common';
import type { Platform, RegistryClient } from '@kiln/registry';
import { INLINE_CACHE_KEY } from '../cache/cache-config.js';
import { collectCacheConfig, inlineConfig, type BuiltVertex, type ChainLayer } from '../cache/cache-export.js';
import { loadLocalCache, loadRegistryCache, pushRegistryCache, writeLocalCache, type CachePackOptions, type LoadedCache } from '../cache/cache-remote.js';
import type { WorkerPool } from './workers.js';

type ContentClient = Client<typeof content.ContentService>;

/** A `--cache-to` entry, validated and defaulted. */
export type CacheExportTarget =
  | { type: 'inline' }
  | ({ type: 'registry'; ref: string; mode: 'min' | 'max'; compression: string } & CachePackOptions)
  | ({ type: 'local'; dest: string; tag: string; mode: 'min' | 'max'; compression: string } & CachePackOptions);

/** A `--cache-from` entry, validated. */
export type CacheImportSource = { type: 'registry'; ref: string } | { type: 'local'; src: string; tag?: string };

const bool = (v: string | undefined, def: boolean, field: string): boolean => {
  if (v === undefined || v === '') return def;
  if (v === 'true' || v === 'false') return v === 'true';
  throw new InvalidArgumentError(`invalid ${field} value "${v}" (want true or false)`, 'cache_exports');
};

/** Validates `--cache-to` entries; InvalidArgumentError naming the attr at fault, UnimplementedError for other backends. */
export function compileCacheExports(entries: readonly control.CacheOptionsEntry[]): CacheExportTarget[] {
  return entries.map((e) => {
    if (e.type === 'inline') return { type: 'inline' };
    if (e.type !== 'registry' && e.type !== 'local') throw new UnimplementedError(`cache export type "${e.type}" is not supported (registry, local or inline)`, { field: 'cache_exports' });
    const a = e.attrs;
    const mode = a['mode'] ?? 'min';
    if (mode !== 'min' && mode !== 'max') throw new InvalidArgumentError(`invalid cache mode "${mode}" (want min or max)`, 'cache_exports');
    const compression = a['compression'] ?? 'gzip';
    if (!['gzip', 'zstd', 'uncompressed'].includes(compression)) throw new InvalidArgumentError(`invalid cache compression "${compression}" (want gzip, zstd or uncompressed)`, 'cache_exports');
    const pack = { ociMediaTypes: bool(a['oci-mediatypes'], true, 'oci-mediatypes'), imageManifest: bool(a['image-manifest'], false, 'image-manifest') };
    if (e.type === 'registry') {
      if (!a['ref']) throw new InvalidArgumentError('a registry cache export needs ref=', 'cache_exports');
      return { type: 'registry', ref: a['ref'], mode, compression, ...pack };
    }
    if (!a['dest']) throw new InvalidArgumentError('a local cache export needs dest=', 'cache_exports');
    return { type: 'local', dest: a['dest'], tag: a['tag'] || 'latest', mode, compression, ...pack };
  });
}

/** Validates `--cache-from` entries. */
export function compileCacheImports(entries: readonly control.CacheOptionsEntry[]): CacheImportSource[] {
  return entries.map((e) => {
    if (e.type === 'registry') {
      if (!e.attrs['ref']) throw new InvalidArgumentError('a registry cache import needs ref=', 'cache_imports');
      return { type: 'registry', ref: e.attrs['ref'] };
    }
    if (e.type === 'local') {
      if (!e.attrs['src']) throw new InvalidArgumentError('a local cache import needs src=', 'cache_imports');
      return { type: 'local', src: e.attrs['src'], ...(e.attrs['tag'] ? { tag: e.attrs['tag'] } : {}) };
    }
    throw new UnimplementedError(`cache import type "${e.type}" is not supported (registry or local)`, { field: 'cache_imports' });
  });
}

/** Loads every import; one that fails (or has no cache) is logged and skipped, as BuildKit does. */
export async function loadCacheImports(sources: readonly CacheImportSource[], registry: RegistryClient, platform: Platform, logger: Logger, signal: AbortSignal): Promise<LoadedCache[]> {
  const out: LoadedCache[] = [];
  for (const s of sources) {
    const where = s.type === 'registry' ? s.ref : s.src;
    try {
      const loaded = s.type === 'registry' ? await loadRegistryCache(registry, s.ref, platform, signal) : await loadLocalCache(s.src, s.tag, platform);
      if (loaded) out.push(loaded);
      else logger.warn({ cache: where }, 'no build cache found in the import');
    } catch (err) {
      if (signal.aborted) throw err;
      logger.warn({ err, cache: where }, 'failed to import build cache; continuing without it');
    }
  }
  return out;
}

export interface CacheExportDeps {
  workers: WorkerPool;
  content: () => Promise<ContentClient>;
  registry: RegistryClient;
  logger: Logger;
}

/**
 * Runs `fn` with a content-store lease that holds the layers GetLayers
 * makes, and a LayersOf over it; the lease is deleted afterwards.
 */
async function withLayers<T>(deps: CacheExportDeps, compression: string, ociMediaTypes: boolean, signal: AbortSignal, fn: (layersOf: (workerId: string, ref: string) => Promise<ChainLayer[]>, store: ContentClient) => Promise<T>): Promise<T> {
  const store = await deps.content();
  const { lease } = await store.createLease({ id: `cache-export-${randomBytes(8).toString('hex')}`, expiresAt: timestampFromMs(Date.now() + 3_600_000), labels: { 'kiln.purpose': 'cache-export' } }, { signal });
  try {
    const layersOf = async (workerId: string, ref: string): Promise<ChainLayer[]> => {
      const w = await deps.workers.get(workerId);
      if (!w) throw new InvalidArgumentError(`worker ${workerId} is gone`);
      const res = await w.client.getLayers({ ref, compression, ociMediaTypes, lease: lease!.id }, { signal });
      return res.layers.map((l) => ({ digest: l.digest, size: Number(l.size), mediaType: l.mediaType, diffId: l.diffId, ...(l.createdBy ? { createdBy: l.createdBy } : {}) }));
    };
    return await fn(layersOf, store);
  } finally {
    await store.deleteLease({ id: lease!.id }).catch((err: unknown) => deps.logger.warn({ err }, 'failed to delete the cache export lease'));
  }
}

/** Exports the build's cache to a registry or a local OCI layout; returns the manifest digest and the record count. */
export async function exportCache(
  target: Exclude<CacheExportTarget, { type: 'inline' }>,
  vertices: ReadonlyMap<string, BuiltVertex>,
  final: { digest: string; index: number } | undefined,
  deps: CacheExportDeps,
  signal: AbortSignal,
): Promise<{ digest: string; records: number }> {
  return withLayers(deps, target.compression, target.ociMediaTypes, signal, async (layersOf, store) => {
    const config = await collectCacheConfig(vertices, final, target.mode, layersOf, deps.logger);
    const read = async function* (digest: string, sig?: AbortSignal) {
      for await (const m of store.read({ digest }, { signal: sig })) yield m.data;
    };
    const desc =
      target.type === 'registry'
        ? await pushRegistryCache(deps.registry, target.ref, config, read, target, signal)
        : await writeLocalCache(target.dest, target.tag, config, read, target, signal);
    return { digest: desc.digest, records: config.records.length };
  });
}

/**
 * The image config with the build's inline cache (mode min) under
 * INLINE_CACHE_KEY: records whose results index the image's layers. An
 * empty or non-object config is returned as it is.
 */
export async function withInlineCache(
  imageConfig: Uint8Array,
  vertices: ReadonlyMap<string, BuiltVertex>,
  final: { digest: string; index: number } | undefined,
  deps: CacheExportDeps,
  signal: AbortSignal,
): Promise<Uint8Array> {
  if (imageConfig.length === 0) return imageConfig;
  const doc = JSON.parse(new TextDecoder().decode(imageConfig)) as unknown;
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) return imageConfig;
  const inline = await withLayers(deps, 'gzip', true, signal, async (layersOf) => {
    const config = await collectCacheConfig(vertices, final, 'min', layersOf, deps.logger);
    return inlineConfig(config, config.finalLayers);
  });
  return new TextEncoder().encode(JSON.stringify({ ...(doc as object), [INLINE_CACHE_KEY]: inline }));
}
