import { createHash } from 'node:crypto';
import { closeSync, constants, createReadStream, existsSync, mkdirSync, openSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { InvalidArgumentError, KilnError } from '@kiln/common';
import {
  MediaType,
  chooseManifest,
  formatReference,
  parseManifest,
  parseReference,
  type Descriptor,
  type ImageManifest,
  type ParsedManifest,
  type Platform,
  type Reference,
  type RegistryClient,
} from '@kiln/registry';
import { CACHE_CONFIG_MEDIA_TYPE, INLINE_CACHE_KEY, encodeCacheConfig, parseCacheConfig, type CacheConfig } from './cache-config.js';

/** An imported cache: its config and where its layer blobs are read from. */
export interface LoadedCache {
  /** Names the source in logs and errors (the ref or the directory). */
  where: string;
  config: CacheConfig;
  /** Streams a layer blob of the config (verified by the reader: the content store checks digests). */
  fetch(desc: Descriptor, signal?: AbortSignal): AsyncIterable<Uint8Array>;
}

/** How an exported cache is packed. */
export interface CachePackOptions {
  /** An OCI image manifest whose config is the cache config (true), or an index listing the blobs (BuildKit's default form). */
  imageManifest: boolean;
  /** OCI media types for the manifest/index (true) or Docker schema 2 ones. */
  ociMediaTypes: boolean;
}

interface Packed {
  config: { desc: Descriptor; bytes: Uint8Array };
  top: { desc: Descriptor; bytes: Uint8Array };
  layers: Descriptor[];
}

const sha256 = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** The config blob and the manifest or index naming it and every layer. */
export function packCache(config: CacheConfig, opts: CachePackOptions): Packed {
  const configBytes = encodeCacheConfig(config);
  const configDesc: Descriptor = { mediaType: CACHE_CONFIG_MEDIA_TYPE, digest: sha256(configBytes), size: configBytes.byteLength };
  const seen = new Set<string>();
  const layers: Descriptor[] = [];
  for (const l of config.layers) {
    if (seen.has(l.digest)) continue;
    seen.add(l.digest);
    layers.push({ mediaType: l.mediaType, digest: l.digest, size: l.size });
  }
  let doc: Record<string, unknown>;
  let mediaType: string;
  if (opts.imageManifest) {
    mediaType = opts.ociMediaTypes ? MediaType.OciManifest : MediaType.DockerManifest;
    doc = { schemaVersion: 2, mediaType, config: configDesc, layers };
  } else {
    mediaType = opts.ociMediaTypes ? MediaType.OciIndex : MediaType.DockerManifestList;
    doc = { schemaVersion: 2, mediaType, manifests: [...layers, configDesc] };
  }
  const bytes = new TextEncoder().encode(JSON.stringify(doc));
  return { config: { desc: configDesc, bytes: configBytes }, top: { desc: { mediaType, digest: sha256(bytes), size: bytes.byteLength }, bytes }, layers };
}

/** Blob reader for export: the content-store blob of a layer. */
export type BlobReader = (digest: string, signal?: AbortSignal) => AsyncIterable<Uint8Array>;

/** Pushes the config, the layer blobs (skipping those the registry has) and the manifest/index under `ref`. */
export async function pushRegistryCache(registry: RegistryClient, ref: string, config: CacheConfig, read: BlobReader, opts: CachePackOptions, signal?: AbortSignal): Promise<Descriptor> {
  const target = parseCacheRef(ref, 'cache_exports');
  const packed = packCache(config, opts);
  for (const l of packed.layers) await registry.pushBlob(target, l, () => read(l.digest, signal), signal);
  await registry.pushBlob(target, packed.config.desc, () => once(packed.config.bytes), signal);
  await registry.pushManifest(target, packed.top.desc, packed.top.bytes, signal);
  return packed.top.desc;
}

/**
 * Writes an OCI layout under `dir`: `oci-layout`, blobs under
 * `blobs/sha256/`, and `index.json` naming the cache manifest/index with the
 * `org.opencontainers.image.ref.name` annotation `tag` (an older entry of the
 * same tag is replaced; other entries are kept).
 */
export async function writeLocalCache(dir: string, tag: string, config: CacheConfig, read: BlobReader, opts: CachePackOptions, signal?: AbortSignal): Promise<Descriptor> {
  const packed = packCache(config, opts);
  const blobs = join(dir, 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true });
  const blobPath = (digest: string) => join(blobs, digest.slice('sha256:'.length));
  for (const l of packed.layers) {
    if (existsSync(blobPath(l.digest))) continue;
    const parts: Uint8Array[] = [];
    for await (const c of read(l.digest, signal)) parts.push(c);
    writeAtomic(blobPath(l.digest), Buffer.concat(parts));
  }
  writeAtomic(blobPath(packed.config.desc.digest), packed.config.bytes);
  writeAtomic(blobPath(packed.top.desc.digest), packed.top.bytes);
  writeAtomic(join(dir, 'oci-layout'), new TextEncoder().encode('{"imageLayoutVersion":"1.0.0"}'));
  const index = readLayoutIndex(dir);
  const manifests = index.manifests.filter((m) => m.annotations?.[REF_NAME] !== tag);
  manifests.push({ ...packed.top.desc, annotations: { [REF_NAME]: tag } });
  writeAtomic(join(dir, 'index.json'), new TextEncoder().encode(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests })));
  return packed.top.desc;
}

const REF_NAME = 'org.opencontainers.image.ref.name';

/**
 * Loads a cache pushed under `ref`: a cache manifest or index, or an image
 * (for an index of images, the one for `platform`) whose config carries an
 * inline cache. Returns undefined for an image without one.
 */
export async function loadRegistryCache(registry: RegistryClient, ref: string, platform: Platform, signal?: AbortSignal): Promise<LoadedCache | undefined> {
  const source = parseCacheRef(ref, 'cache_imports');
  const where = formatReference(source);
  const readBlob = async (desc: Descriptor) => collect(registry.fetch(source, desc, signal));
  let top: ParsedManifest = await registry.getManifest(source, undefined, signal);
  if (top.kind === 'index' && !top.index.manifests.some((m) => m.mediaType === CACHE_CONFIG_MEDIA_TYPE)) {
    top = await registry.getManifest(source, chooseManifest(top.index, platform, source), signal);
  }
  const config = await readCache(top, readBlob, where);
  return config && { where, config, fetch: (desc, sig) => registry.fetch(source, desc, sig) };
}

/** Loads the cache of `tag` (or the only entry) from the OCI layout at `dir`. */
export async function loadLocalCache(dir: string, tag: string | undefined, platform: Platform): Promise<LoadedCache | undefined> {
  if (!existsSync(join(dir, 'index.json'))) throw new KilnError('not_found', `failed to import cache from ${dir}: no index.json`, { field: 'cache_imports' });
  const index = readLayoutIndex(dir);
  const entry = tag === undefined && index.manifests.length === 1 ? index.manifests[0] : index.manifests.find((m) => m.annotations?.[REF_NAME] === (tag ?? 'latest'));
  if (!entry) throw new KilnError('not_found', `failed to import cache from ${dir}: no entry tagged "${tag ?? 'latest'}" in index.json`, { field: 'cache_imports' });
  const path = (digest: string) => {
    if (!/^sha256:[0-9a-f]{64}$/.test(digest)) throw new InvalidArgumentError(`failed to import cache from ${dir}: invalid digest ${digest}`, 'cache_imports');
    return join(dir, 'blobs', 'sha256', digest.slice('sha256:'.length));
  };
  const readBlob = async (desc: Descriptor) => {
    const bytes = readFileSync(path(desc.digest));
    if (sha256(bytes) !== desc.digest) throw new KilnError('failed_precondition', `failed to import cache from ${dir}: blob ${desc.digest} does not match its digest`);
    return new Uint8Array(bytes);
  };
  let top = parseManifest(await readBlob(entry), entry.mediaType, `${dir} ${entry.digest}`);
  if (top.kind === 'index' && !top.index.manifests.some((m) => m.mediaType === CACHE_CONFIG_MEDIA_TYPE)) {
    const chosen = chooseManifest(top.index, platform, dir);
    top = parseManifest(await readBlob(chosen), chosen.mediaType, `${dir} ${chosen.digest}`);
  }
  const config = await readCache(top, readBlob, dir);
  return config && { where: dir, config, fetch: (desc) => createReadStream(path(desc.digest)) as AsyncIterable<Uint8Array> };
}

/** The cache config of a cache index, cache manifest or image with an inline cache; undefined for a plain image. */
async function readCache(top: ParsedManifest, readBlob: (d: Descriptor) => Promise<Uint8Array>, where: string): Promise<CacheConfig | undefined> {
  if (top.kind === 'index') {
    const cfg = top.index.manifests.find((m) => m.mediaType === CACHE_CONFIG_MEDIA_TYPE);
    if (!cfg) return undefined;
    return parseCacheConfig(await readBlob(cfg), where);
  }
  const m = top.manifest;
  if (m.config.mediaType === CACHE_CONFIG_MEDIA_TYPE) return parseCacheConfig(await readBlob(m.config), where);
  return inlineCache(m, await readBlob(m.config), where);
}

/** An image's inline cache, with its layers taken from the image (layer i on top of i-1). */
function inlineCache(m: ImageManifest, configBytes: Uint8Array, where: string): CacheConfig | undefined {
  let image: { rootfs?: { diff_ids?: unknown }; [INLINE_CACHE_KEY]?: unknown };
  try {
    image = JSON.parse(new TextDecoder().decode(configBytes)) as typeof image;
  } catch {
    throw new KilnError('failed_precondition', `failed to import cache from ${where}: image config is not JSON`);
  }
  const inline = image[INLINE_CACHE_KEY];
  if (!inline || typeof inline !== 'object') return undefined;
  const diffIds = image.rootfs?.diff_ids;
  if (!Array.isArray(diffIds) || diffIds.length !== m.layers.length) {
    throw new KilnError('failed_precondition', `failed to import cache from ${where}: the image has ${m.layers.length} layers but ${Array.isArray(diffIds) ? diffIds.length : 0} diff ids`);
  }
  const layers = m.layers.map((l, i) => ({ digest: l.digest, size: l.size, mediaType: l.mediaType, diffId: diffIds[i] as unknown, parent: i - 1 }));
  return parseCacheConfig({ ...(inline as object), layers }, where);
}

function parseCacheRef(ref: string | undefined, field: string): Reference {
  if (!ref) throw new InvalidArgumentError('a registry cache needs ref=', field);
  return parseReference(ref, field);
}

function readLayoutIndex(dir: string): { manifests: Descriptor[] } {
  const file = join(dir, 'index.json');
  if (!existsSync(file)) return { manifests: [] };
  try {
    // O_NOFOLLOW: a client-named index.json that is a symlink (to a root-only file) is refused.
    const fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW);
    let text: string;
    try {
      text = readFileSync(fd, 'utf8');
    } finally {
      closeSync(fd);
    }
    const doc = JSON.parse(text) as { manifests?: unknown };
    if (!Array.isArray(doc.manifests)) throw new Error('no manifests array');
    return { manifests: doc.manifests as Descriptor[] };
  } catch (err) {
    // Never the parser's message: it quotes the file's bytes into errors and logs.
    const why = (err as NodeJS.ErrnoException).code === 'ELOOP' ? 'it is a symlink' : err instanceof SyntaxError ? 'not valid JSON' : (err as NodeJS.ErrnoException).code ?? 'no manifests array';
    throw new KilnError('failed_precondition', `failed to read ${file}: ${why}`);
  }
}

function writeAtomic(file: string, data: Uint8Array): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, data);
  renameSync(tmp, file);
}

async function collect(src: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const c of src) parts.push(c);
  return new Uint8Array(Buffer.concat(parts));
}

async function* once(b: Uint8Array): AsyncGenerator<Uint8Array> {
  yield b;
}
