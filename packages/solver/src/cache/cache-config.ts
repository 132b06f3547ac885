import { InvalidArgumentError } from '@kiln/common';

/** Media type of Kiln's cache config blob (the model is BuildKit's `application/vnd.buildkit.cacheconfig.v0`). */
export const CACHE_CONFIG_MEDIA_TYPE = 'application/vnd.kiln.cache.config.v0+json';

/** Key of the inline cache config in an image config JSON (next to `config`, `rootfs`, ...). */
export const INLINE_CACHE_KEY = 'kiln.cache.v0';

/** A layer blob of an exported cache and the layer below it. */
export interface CacheLayer {
  digest: string;
  size: number;
  mediaType: string;
  /** sha256 of the uncompressed tar. */
  diffId: string;
  /** Index in `CacheConfig.layers` of the layer below; -1 for a bottom layer. */
  parent: number;
  /** The step that made it (image history), when known. */
  createdBy?: string;
}

/** One vertex's result: its cache key (as the solver computes it) and, per output, the top of its layer chain. */
export interface CacheRecord {
  key: string;
  /** Keys of the vertex's inputs (informational: a key already covers its inputs). */
  parents: string[];
  /** Per op output: the index in `layers` of the chain's top layer; -1 for an empty filesystem. */
  results: number[];
  description?: string;
  /**
   * The vertex's definition key (see definitionKeys): its op with inputs
   * replaced by their definition keys, never by checksums of what it read.
   * An importer computes it without running the vertex's ancestors, so a
   * `mode=min` cache (only the result's records) still skips them.
   */
  definitionKey?: string;
}

/**
 * The cache config blob: layers (each with its parent, so a record's chain
 * is its top layer and the ones below) and records. In an inline cache
 * (`INLINE_CACHE_KEY` in an image config) `layers` is empty and a result
 * index `i` names the image's layers 0..i.
 */
export interface CacheConfig {
  layers: CacheLayer[];
  records: CacheRecord[];
}

const DIGEST = /^sha256:[0-9a-f]{64}$/;

/** Serialises a config with a fixed key order (same config, same bytes). */
export function encodeCacheConfig(c: CacheConfig): Uint8Array {
  const layers = c.layers.map((l) => ({
    digest: l.digest,
    size: l.size,
    mediaType: l.mediaType,
    diffId: l.diffId,
    parent: l.parent,
    ...(l.createdBy ? { createdBy: l.createdBy } : {}),
  }));
  const records = c.records.map((r) => ({
    key: r.key,
    parents: r.parents,
    results: r.results,
    ...(r.description ? { description: r.description } : {}),
    ...(r.definitionKey ? { definitionKey: r.definitionKey } : {}),
  }));
  return new TextEncoder().encode(JSON.stringify({ layers, records }));
}

/**
 * Parses and checks a cache config (from JSON text or an already parsed
 * value): digests well formed, parents pointing below, results in range.
 * `where` names the source in errors (e.g. the cache ref).
 */
export function parseCacheConfig(input: Uint8Array | unknown, where: string, opts: { inline?: boolean; imageLayers?: number } = {}): CacheConfig {
  let doc: unknown = input;
  if (input instanceof Uint8Array) {
    try {
      doc = JSON.parse(new TextDecoder().decode(input));
    } catch (err) {
      throw bad(where, `not JSON (${(err as Error).message})`);
    }
  }
  if (!doc || typeof doc !== 'object') throw bad(where, 'not a JSON object');
  const { layers = [], records } = doc as { layers?: unknown; records?: unknown };
  if (!Array.isArray(layers) || !Array.isArray(records)) throw bad(where, 'layers and records must be arrays');
  const out: CacheConfig = { layers: [], records: [] };
  for (const [i, l] of (layers as Record<string, unknown>[]).entries()) {
    const ok =
      l && typeof l.digest === 'string' && DIGEST.test(l.digest) && typeof l.diffId === 'string' && DIGEST.test(l.diffId) &&
      typeof l.mediaType === 'string' && Number.isSafeInteger(l.size) && (l.size as number) >= 0 &&
      Number.isInteger(l.parent) && (l.parent as number) >= -1 && (l.parent as number) < i;
    if (!ok) throw bad(where, `layer ${i} is malformed`);
    out.layers.push({
      digest: l.digest as string,
      size: l.size as number,
      mediaType: l.mediaType as string,
      diffId: l.diffId as string,
      parent: l.parent as number,
      ...(typeof l.createdBy === 'string' && l.createdBy ? { createdBy: l.createdBy } : {}),
    });
  }
  const limit = opts.inline ? (opts.imageLayers ?? 0) : out.layers.length;
  for (const [i, r] of (records as Record<string, unknown>[]).entries()) {
    const ok =
      r && typeof r.key === 'string' && r.key !== '' && Array.isArray(r.parents) && r.parents.every((p) => typeof p === 'string') &&
      Array.isArray(r.results) && r.results.every((x) => Number.isInteger(x) && (x as number) >= -1 && (x as number) < limit);
    if (!ok) throw bad(where, `record ${i} is malformed`);
    out.records.push({
      key: r.key as string,
      parents: r.parents as string[],
      results: r.results as number[],
      ...(typeof r.description === 'string' && r.description ? { description: r.description } : {}),
      ...(typeof r.definitionKey === 'string' && r.definitionKey ? { definitionKey: r.definitionKey } : {}),
    });
  }
  return out;
}

/** The layers of the chain whose top is `top` (bottom first); empty for -1. */
export function chainOf(config: CacheConfig, top: number): CacheLayer[] {
  const out: CacheLayer[] = [];
  for (let i = top; i >= 0; i = config.layers[i]!.parent) out.push(config.layers[i]!);
  return out.reverse();
}

function bad(where: string, why: string): InvalidArgumentError {
  return new InvalidArgumentError(`failed to read the cache config of ${where}: ${why}`, 'cache_imports');
}
