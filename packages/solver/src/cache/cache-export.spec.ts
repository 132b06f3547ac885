import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '@kiln/common';
import { compileCacheExports, compileCacheImports } from '../control/build-cache.js';
import { chainOf, parseCacheConfig } from './cache-config.js';
import { collectCacheConfig, inlineConfig, type BuiltVertex, type ChainLayer } from './cache-export.js';
import { loadLocalCache, packCache, writeLocalCache } from './cache-remote.js';

const sha = (s: string | Uint8Array) => `sha256:${createHash('sha256').update(s).digest('hex')}`;
const layer = (name: string): ChainLayer => ({ digest: sha(`blob-${name}`), size: name.length, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', diffId: sha(`tar-${name}`) });

/** base -> run1 -> run2 (final); other -> sibling stage, read by nothing in the final chain; ctx is a local source. */
function graph(): Map<string, BuiltVertex> {
  const v = (digest: string, inputs: string[], refs: string[], exportable = true): BuiltVertex => ({
    digest, key: `key-${digest}`, parents: inputs.map((i) => `key-${i}`), inputs, description: digest, workerId: 'w', refs, exportable,
  });
  return new Map([
    ['ctx', v('ctx', [], ['r-ctx'], false)],
    ['base', v('base', [], ['r-base'])],
    ['run1', v('run1', ['base', 'ctx'], ['r-run1'])],
    ['empty', v('empty', ['run1'], ['r-empty'])],
    ['run2', v('run2', ['empty'], ['r-run2'])],
    ['other', v('other', ['base'], ['r-other'])],
  ]);
}
const chains: Record<string, ChainLayer[]> = {
  'r-ctx': [layer('ctx')],
  'r-base': [layer('b0'), layer('b1')],
  'r-run1': [layer('b0'), layer('b1'), layer('run1')],
  'r-empty': [layer('b0'), layer('b1'), layer('run1')],
  'r-run2': [layer('b0'), layer('b1'), layer('run1'), layer('run2')],
  'r-other': [layer('b0'), layer('b1'), layer('other')],
};
const layersOf = async (_w: string, ref: string) => chains[ref]!;

describe('collectCacheConfig', () => {
  it('mode=max keeps every exportable vertex; the final chain fills the first layers; shared layers are stored once', async () => {
    const c = await collectCacheConfig(graph(), { digest: 'run2', index: 0 }, 'max', layersOf, silentLogger());
    expect(c.finalLayers).toBe(4);
    expect(c.layers.map((l) => l.digest)).toEqual([...chains['r-run2']!, layer('other')].map((l) => l.digest));
    expect(c.layers.map((l) => l.parent)).toEqual([-1, 0, 1, 2, 1]);
    expect(c.records.map((r) => r.key).sort()).toEqual(['key-base', 'key-empty', 'key-other', 'key-run1', 'key-run2']);
    const byKey = new Map(c.records.map((r) => [r.key, r]));
    expect(byKey.get('key-empty')!.results).toEqual(byKey.get('key-run1')!.results);
    expect(chainOf(c, byKey.get('key-other')!.results[0]!).map((l) => l.digest)).toEqual(chains['r-other']!.map((l) => l.digest));
    expect(byKey.get('key-run1')!.parents).toEqual(['key-base', 'key-ctx']);
  });

  it('mode=min keeps only the steps whose layers are in the result; inline names image layers by index', async () => {
    const c = await collectCacheConfig(graph(), { digest: 'run2', index: 0 }, 'min', layersOf, silentLogger());
    expect(c.records.map((r) => r.key).sort()).toEqual(['key-base', 'key-empty', 'key-run1', 'key-run2']);
    expect(c.layers).toHaveLength(4);
    const inline = inlineConfig(c, c.finalLayers);
    expect(Object.fromEntries(inline.records.map((r) => [r.key, r.results]))).toEqual({ 'key-base': [1], 'key-run1': [2], 'key-empty': [2], 'key-run2': [3] });
  });

  it('leaves out a vertex whose layers cannot be made', async () => {
    const failing = async (w: string, ref: string) => {
      if (ref === 'r-other') throw new Error('no content store');
      return layersOf(w, ref);
    };
    const c = await collectCacheConfig(graph(), { digest: 'run2', index: 0 }, 'max', failing, silentLogger());
    expect(c.records.map((r) => r.key)).not.toContain('key-other');
    expect(c.records).toHaveLength(4);
  });
});

describe('cache config', () => {
  it('round-trips and refuses malformed configs naming the source', async () => {
    const c = await collectCacheConfig(graph(), { digest: 'run2', index: 0 }, 'max', layersOf, silentLogger());
    const { config } = packCache(c, { imageManifest: true, ociMediaTypes: true });
    expect(parseCacheConfig(config.bytes, 'x')).toEqual({ layers: c.layers, records: c.records });
    expect(() => parseCacheConfig(new TextEncoder().encode('nope'), 'reg/cache:1')).toThrow(/cache config of reg\/cache:1: not JSON/);
    expect(() => parseCacheConfig({ layers: [{ ...layer('a'), parent: 0 }], records: [] }, 'x')).toThrow(/layer 0 is malformed/);
    expect(() => parseCacheConfig({ layers: [], records: [{ key: 'k', parents: [], results: [0] }] }, 'x')).toThrow(/record 0 is malformed/);
    expect(() => parseCacheConfig({ layers: [{ ...layer('a'), digest: 'md5:1', parent: -1 }], records: [] }, 'x')).toThrow(/layer 0/);
  });

  it('packs an index listing the blobs and the config when image-manifest=false', async () => {
    const c = await collectCacheConfig(graph(), { digest: 'run2', index: 0 }, 'min', layersOf, silentLogger());
    const p = packCache(c, { imageManifest: false, ociMediaTypes: true });
    const doc = JSON.parse(new TextDecoder().decode(p.top.bytes)) as { mediaType: string; manifests: { mediaType: string; digest: string }[] };
    expect(doc.mediaType).toBe('application/vnd.oci.image.index.v1+json');
    expect(doc.manifests.map((m) => m.digest)).toEqual([...c.layers.map((l) => l.digest), p.config.desc.digest]);
    expect(p.top.desc.digest).toBe(sha(p.top.bytes));
  });
});

describe('local cache (OCI layout)', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'kiln-local-cache-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const blobs = new Map(Object.values(chains).flat().map((l) => [l.digest, new TextEncoder().encode(`data of ${l.digest}`)]));
  const read = async function* (digest: string) {
    yield blobs.get(digest)!;
  };

  it('writes blobs, config and a tagged index.json, and reads them back; a tag is replaced, others kept', async () => {
    // Blob contents here are fake: give each layer the digest of its bytes.
    const real = (l: ChainLayer): ChainLayer => ({ ...l, digest: sha(blobs.get(l.digest)!) });
    const realBlobs = new Map([...blobs.values()].map((b) => [sha(b), b]));
    const c = await collectCacheConfig(graph(), { digest: 'run2', index: 0 }, 'min', async (w, r) => (await layersOf(w, r)).map(real), silentLogger());
    const readReal = async function* (digest: string) {
      yield realBlobs.get(digest)!;
    };
    await writeLocalCache(dir, 'latest', c, readReal, { imageManifest: true, ociMediaTypes: true });
    await writeLocalCache(dir, 'other', { layers: [], records: [] }, read, { imageManifest: false, ociMediaTypes: true });
    await writeLocalCache(dir, 'latest', c, readReal, { imageManifest: true, ociMediaTypes: true });
    const index = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as { manifests: { annotations: Record<string, string> }[] };
    expect(index.manifests.map((m) => m.annotations['org.opencontainers.image.ref.name']).sort()).toEqual(['latest', 'other']);

    const loaded = (await loadLocalCache(dir, undefined, { os: 'linux', architecture: 'amd64' }))!;
    expect(loaded.config.records).toEqual(c.records);
    const top = loaded.config.layers[3]!;
    const parts: Uint8Array[] = [];
    for await (const p of loaded.fetch({ digest: top.digest, size: top.size, mediaType: top.mediaType })) parts.push(p);
    expect(sha(Buffer.concat(parts))).toBe(top.digest);
    expect((await loadLocalCache(dir, 'other', { os: 'linux', architecture: 'amd64' }))!.config.records).toEqual([]);
    await expect(loadLocalCache(dir, 'missing', { os: 'linux', architecture: 'amd64' })).rejects.toThrow(/no entry tagged "missing"/);
  });

  it('refuses a layout whose blob does not match its digest', async () => {
    const c = { layers: [], records: [] };
    const desc = await writeLocalCache(dir, 'latest', c, read, { imageManifest: true, ociMediaTypes: true });
    writeFileSync(join(dir, 'blobs', 'sha256', desc.digest.slice(7)), '{"tampered":true}');
    await expect(loadLocalCache(dir, 'latest', { os: 'linux', architecture: 'amd64' })).rejects.toThrow(/does not match its digest/);
    await expect(loadLocalCache(join(dir, 'nowhere'), undefined, { os: 'linux', architecture: 'amd64' })).rejects.toThrow(/no index.json/);
  });
});

describe('cache options', () => {
  it('defaults and validates --cache-to and --cache-from entries', () => {
    expect(compileCacheExports([{ type: 'registry', attrs: { ref: 'r/c:1' } } as never])).toEqual([
      { type: 'registry', ref: 'r/c:1', mode: 'min', compression: 'gzip', ociMediaTypes: true, imageManifest: false },
    ]);
    expect(compileCacheExports([{ type: 'local', attrs: { dest: '/d', mode: 'max', 'image-manifest': 'true' } } as never])[0]).toMatchObject({ type: 'local', dest: '/d', tag: 'latest', mode: 'max', imageManifest: true });
    expect(() => compileCacheExports([{ type: 'gha', attrs: {} } as never])).toThrow(/cache export type "gha" is not supported/);
    expect(() => compileCacheExports([{ type: 'registry', attrs: { ref: 'r', mode: 'all' } } as never])).toThrow(/invalid cache mode "all"/);
    expect(() => compileCacheExports([{ type: 'registry', attrs: { ref: 'r', compression: 'lz4' } } as never])).toThrow(/compression "lz4"/);
    expect(() => compileCacheExports([{ type: 'registry', attrs: { ref: 'r', 'oci-mediatypes': 'yes' } } as never])).toThrow(/oci-mediatypes value "yes"/);
    expect(() => compileCacheExports([{ type: 'local', attrs: {} } as never])).toThrow(/needs dest=/);
    expect(compileCacheImports([{ type: 'local', attrs: { src: '/s' } } as never])).toEqual([{ type: 'local', src: '/s' }]);
    expect(() => compileCacheImports([{ type: 'registry', attrs: {} } as never])).toThrow(/needs ref=/);
  });
});
