import { readTarEntries } from '@kiln/common';
import { distributionSourceLabel, type Descriptor, type PushBlobOptions, type Reference, type RegistryClient } from '@kiln/registry';
import { describe, expect, it, vi } from 'vitest';
import { digestOf, fakeLayer, fakeTier } from './testing/fixtures/fake-neighbours.js';
import { GC_ROOT_LABEL, IMAGE_NAME_LABEL_PREFIX } from './image/image-store.js';

const base = fakeLayer(Buffer.from('base-layer-tar'), '', true);
const run = fakeLayer(Buffer.from('run-layer-tar'), '[2/2] RUN make');
const imageConfig = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Cmd: ['/bin/hello'] }, rootfs: { type: 'layers', diff_ids: [] }, history: [{ created_by: 'RUN make' }, { created_by: 'CMD ["/bin/hello"]', empty_layer: true }] }));

async function untar(bytes: Buffer): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  async function* src() {
    yield bytes;
  }
  for await (const e of readTarEntries(src())) {
    const parts: Buffer[] = [];
    for await (const c of e.body) parts.push(c);
    out.set(e.header.type === 'directory' ? `${e.header.name}/` : e.header.name, Buffer.concat(parts));
  }
  return out;
}
const json = (b: Buffer | undefined) => JSON.parse(b!.toString()) as Record<string, any>;
const blobOf = (files: Map<string, Buffer>, digest: string) => files.get(`blobs/sha256/${digest.slice(7)}`);

describe('oci and docker exporters', () => {
  it('type=oci: an OCI layout tarball whose blobs, config and index match, with options passed to GetLayers', async () => {
    const t = fakeTier([base, run]);
    const res = await t.client.export({
      buildId: 'b1', sessionId: 's', type: 'oci', workerId: 'w1', ref: 'r1', imageConfig,
      attrs: { 'session.output': 'o1', name: 'example.com/team/app:v1', compression: 'zstd', 'compression-level': '3', 'force-compression': 'true', 'source-date-epoch': '1700000000', 'rewrite-timestamp': 'true', 'annotation.org.example.a': 'm', 'annotation-manifest-descriptor.org.example.d': 'd', 'annotation-index.org.example.i': 'i' },
    });
    expect(t.getLayersCalls).toHaveLength(1);
    expect(t.getLayersCalls[0]).toMatchObject({ ref: 'r1', compression: 'zstd', compressionLevel: 3, forceCompression: true, ociMediaTypes: true, sourceDateEpoch: 1700000000n });
    const files = await untar(t.written.get('o1')!);
    const names = [...files.keys()];
    expect(names).toEqual([...names].sort());
    expect(names.filter((n) => !n.startsWith('blobs/sha256/') || n === 'blobs/sha256/')).toEqual(['blobs/', 'blobs/sha256/', 'index.json', 'oci-layout']);
    expect(json(files.get('oci-layout'))).toEqual({ imageLayoutVersion: '1.0.0' });
    const index = json(files.get('index.json'));
    expect(index).toMatchObject({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', annotations: { 'org.example.i': 'i' } });
    expect(index.manifests).toHaveLength(1);
    const desc = index.manifests[0];
    expect(desc.annotations).toEqual({
      'io.containerd.image.name': 'example.com/team/app:v1',
      'org.example.d': 'd',
      'org.opencontainers.image.created': '2023-11-14T22:13:20Z',
      'org.opencontainers.image.ref.name': 'v1',
    });
    const manifestBytes = blobOf(files, desc.digest)!;
    expect(digestOf(manifestBytes)).toBe(desc.digest);
    const manifest = json(manifestBytes);
    expect(manifest).toMatchObject({ mediaType: 'application/vnd.oci.image.manifest.v1+json', annotations: { 'org.example.a': 'm' }, config: { mediaType: 'application/vnd.oci.image.config.v1+json' } });
    expect(manifest.layers.map((l: Descriptor) => l.digest)).toEqual([base.digest, run.digest]);
    for (const l of manifest.layers as Descriptor[]) expect(blobOf(files, l.digest)).toEqual(l.digest === base.digest ? base.data : run.data);
    const config = json(blobOf(files, manifest.config.digest));
    expect(config.rootfs.diff_ids).toEqual([base.diffId, run.diffId]);
    expect(config.created).toBe('2023-11-14T22:13:20Z');
    expect(config.history).toEqual([
      { created: '2023-11-14T22:13:20Z', comment: 'kiln.exporter.image.v0' },
      { created: '2023-11-14T22:13:20Z', created_by: 'RUN make' },
      { created: '2023-11-14T22:13:20Z', created_by: 'CMD ["/bin/hello"]', empty_layer: true },
    ]);
    expect(res.response['containerimage.digest']).toBe(desc.digest);
    expect(res.response['containerimage.config.digest']).toBe(manifest.config.digest);
    expect(JSON.parse(Buffer.from(res.response['containerimage.descriptor']!, 'base64').toString())).toEqual({ mediaType: manifest.mediaType, digest: desc.digest, size: manifestBytes.length });
    expect(res.response['image.name']).toBe('example.com/team/app:v1');
    // The export's lease goes (in the background); the manifest reaches config and layers through gc.ref labels.
    await vi.waitFor(() => expect(t.leases.size).toBe(0));
    expect(t.labels.get(desc.digest)).toMatchObject({ 'containerd.io/gc.ref.content.config': manifest.config.digest, 'containerd.io/gc.ref.content.l.0': base.digest, 'containerd.io/gc.ref.content.l.1': run.digest });
  });

  it('rewrite-timestamp: the layers made here carry buildkit/rewritten-timestamp, the base layer and cache-imported ones not; off by default and without an epoch', async () => {
    const fromCache = fakeLayer(Buffer.from('cached-layer-tar'), '[1/2] RUN cached', false, true);
    const layersOf = async (attrs: Record<string, string>) => {
      const t = fakeTier([base, fromCache, run]);
      await t.client.export({ buildId: 'b', sessionId: 's', type: 'oci', workerId: 'w1', ref: 'r1', imageConfig, attrs: { 'session.output': 'o', ...attrs } });
      const files = await untar(t.written.get('o')!);
      const manifest = json(blobOf(files, json(files.get('index.json')).manifests[0].digest));
      return { layers: manifest.layers as Descriptor[], epoch: t.getLayersCalls[0]!.sourceDateEpoch };
    };
    const on = await layersOf({ 'source-date-epoch': '1700000002', 'rewrite-timestamp': 'true' });
    expect(on.epoch).toBe(1700000002n);
    expect(on.layers.map((l) => l.annotations)).toEqual([undefined, undefined, { 'buildkit/rewritten-timestamp': '1700000002' }]);
    for (const attrs of [{ 'source-date-epoch': '1700000002', 'rewrite-timestamp': 'false' }, { 'source-date-epoch': '1700000002' }] as Record<string, string>[]) {
      const off = await layersOf(attrs);
      expect(off.epoch).toBeUndefined();
      expect(off.layers.map((l) => l.annotations)).toEqual([undefined, undefined, undefined]);
    }
    const noEpoch = await layersOf({ 'rewrite-timestamp': 'true' });
    expect(noEpoch.layers.map((l) => l.annotations)).toEqual([undefined, undefined, undefined]);
  });

  it('is deterministic with a source date epoch: two exports give the same bytes', async () => {
    const once = async () => {
      const t = fakeTier([base, run]);
      await t.client.export({ buildId: 'b', sessionId: 's', type: 'oci', workerId: 'w1', ref: 'r1', imageConfig, attrs: { 'session.output': 'o', name: 'app', 'source-date-epoch': '0' } });
      return t.written.get('o')!;
    };
    const [a, b] = [await once(), await once()];
    expect(a.equals(b)).toBe(true);
    expect(a.length % 512).toBe(0);
  });

  it('type=docker: manifest.json for docker load, Docker media types, familiar RepoTags', async () => {
    const t = fakeTier([base, run]);
    const res = await t.client.export({ buildId: 'b', sessionId: 's', type: 'docker', workerId: 'w1', ref: 'r1', imageConfig, attrs: { 'session.output': 'o', name: 'app,docker.io/team/app:2' } });
    const files = await untar(t.written.get('o')!);
    expect(files.has('oci-layout')).toBe(true);
    const [entry, ...more] = json(files.get('manifest.json')) as unknown as { Config: string; RepoTags: string[]; Layers: string[] }[];
    expect(more).toEqual([]);
    expect(entry!.RepoTags).toEqual(['app:latest', 'team/app:2']);
    expect(entry!.Layers).toEqual([`blobs/sha256/${base.digest.slice(7)}`, `blobs/sha256/${run.digest.slice(7)}`]);
    const manifest = json(blobOf(files, res.response['containerimage.digest']!));
    expect(manifest.mediaType).toBe('application/vnd.docker.distribution.manifest.v2+json');
    expect(manifest.config.mediaType).toBe('application/vnd.docker.container.image.v1+json');
    expect(manifest.layers[0].mediaType).toBe('application/vnd.docker.image.rootfs.diff.tar.gzip');
    expect(`blobs/sha256/${manifest.config.digest.slice(7)}`).toBe(entry!.Config);
    const index = json(files.get('index.json'));
    expect(index.manifests.map((m: Descriptor) => m.annotations!['io.containerd.image.name'])).toEqual(['docker.io/library/app:latest', 'docker.io/team/app:2']);
  });

  it('exports a scratch result (no ref) as an image without layers', async () => {
    const t = fakeTier([base]);
    const res = await t.client.export({ buildId: 'b', sessionId: 's', type: 'oci', workerId: 'w1', ref: '', attrs: { 'session.output': 'o' } });
    const files = await untar(t.written.get('o')!);
    expect(json(blobOf(files, res.response['containerimage.digest']!)).layers).toEqual([]);
    expect(t.getLayersCalls).toHaveLength(0);
  });

  it('names the attr at fault', async () => {
    const t = fakeTier([base]);
    const exp = (type: string, attrs: Record<string, string>) => t.client.export({ buildId: 'b', sessionId: 's', type, workerId: 'w1', ref: 'r1', attrs: { 'session.output': 'o', ...attrs } });
    await expect(exp('oci', { compression: 'lz4' })).rejects.toMatchObject({ code: 'invalid_argument', details: { field: 'compression' } });
    await expect(exp('oci', { 'compression-level': '30' })).rejects.toMatchObject({ code: 'invalid_argument', details: { field: 'compression-level' } });
    await expect(exp('oci', { 'oci-mediatypes': 'maybe' })).rejects.toMatchObject({ code: 'invalid_argument', details: { field: 'oci-mediatypes' } });
    await expect(exp('oci', { name: 'Bad Name' })).rejects.toMatchObject({ code: 'invalid_argument', details: { field: 'name' } });
    await expect(exp('oci', { 'source-date-epoch': 'yesterday' })).rejects.toMatchObject({ code: 'invalid_argument', details: { field: 'source-date-epoch' } });
    await expect(exp('docker', { 'annotation.a': 'b' })).rejects.toMatchObject({ code: 'invalid_argument', message: expect.stringMatching(/OCI media types/) });
    await expect(exp('image', { push: 'true' })).rejects.toMatchObject({ code: 'invalid_argument', details: { field: 'name' } });
  });
});

describe('image exporter', () => {
  it('keeps the image in the content store as a GC root under its names; a name moves to the newer image', async () => {
    const t = fakeTier([run]);
    const first = await t.client.export({ buildId: 'b', sessionId: 's', type: 'image', workerId: 'w1', ref: 'r1', imageConfig, attrs: { name: 'app:1,app:latest' } });
    const d1 = first.response['containerimage.digest']!;
    expect(t.labels.get(d1)).toMatchObject({ [GC_ROOT_LABEL]: expect.any(String), [`${IMAGE_NAME_LABEL_PREFIX}docker.io/library/app:1`]: expect.any(String), [`${IMAGE_NAME_LABEL_PREFIX}docker.io/library/app:latest`]: expect.any(String) });
    const other = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Cmd: ['other'] } }));
    const second = await t.client.export({ buildId: 'b2', sessionId: 's', type: 'image', workerId: 'w1', ref: 'r1', imageConfig: other, attrs: { name: 'app:latest' } });
    const d2 = second.response['containerimage.digest']!;
    expect(d2).not.toBe(d1);
    expect(Object.keys(t.labels.get(d1)!).filter((k) => k.startsWith('kiln.'))).toEqual([GC_ROOT_LABEL, `${IMAGE_NAME_LABEL_PREFIX}docker.io/library/app:1`]);
    const third = await t.client.export({ buildId: 'b3', sessionId: 's', type: 'image', workerId: 'w1', ref: 'r1', imageConfig: Buffer.from('{"os":"linux","architecture":"amd64","config":{"Cmd":["3"]}}'), attrs: { name: 'app:1' } });
    expect(third.response['containerimage.digest']).not.toBe(d1);
    expect(Object.keys(t.labels.get(d1)!).filter((k) => k.startsWith('kiln.'))).toEqual([]);
  });

  it('writes config and manifest at once (each a chain of durable steps in the store), the manifest naming the config', async () => {
    // Each write waits until the other is in flight too; written one after the other, the first would wait for the timeout.
    const inFlight: string[] = [];
    let pending = 0;
    let bothSeen = false;
    let release: () => void = () => undefined;
    const both = new Promise<void>((r) => (release = r));
    const t = fakeTier([run], {
      async beforeCommit(data) {
        inFlight.push(data.toString().includes('schemaVersion') ? 'manifest' : 'config');
        if (++pending === 2) {
          bothSeen = true;
          release();
        }
        await Promise.race([both, new Promise((r) => setTimeout(r, 1000))]);
        pending--;
      },
    });
    const res = await t.client.export({ buildId: 'b', sessionId: 's', type: 'image', workerId: 'w1', ref: 'r1', imageConfig, attrs: { name: 'app:1' } });
    expect(bothSeen).toBe(true);
    expect(inFlight.sort()).toEqual(['config', 'manifest']);
    const manifest = JSON.parse(t.blobs.get(res.response['containerimage.digest']!)!.toString()) as { config: { digest: string; size: number } };
    expect(manifest.config.digest).toBe(res.response['containerimage.config.digest']);
    expect(t.blobs.get(manifest.config.digest)!.length).toBe(manifest.config.size);
  });

  it('a cached rebuild under the same names writes no labels; a new name, or a lost root, is written', async () => {
    const t = fakeTier([run]);
    const exp = (name: string) => t.client.export({ buildId: 'b', sessionId: 's', type: 'image', workerId: 'w1', ref: 'r1', imageConfig, attrs: { name } });
    const d = (await exp('app:1,app:2')).response['containerimage.digest']!;
    const app1 = `${IMAGE_NAME_LABEL_PREFIX}docker.io/library/app:1`;
    const app2 = `${IMAGE_NAME_LABEL_PREFIX}docker.io/library/app:2`;
    // Marks no export writes: a label write would put the export's time back.
    t.labels.set(d, { ...t.labels.get(d), [GC_ROOT_LABEL]: 'first', [app1]: 'first', [app2]: 'first' });
    expect((await exp('app:1,app:2')).response['containerimage.digest']).toBe(d);
    expect(t.labels.get(d)).toMatchObject({ [GC_ROOT_LABEL]: 'first', [app1]: 'first', [app2]: 'first' });
    // One name it does not hold yet: written (all names and the root, as before).
    await exp('app:1,app:3');
    expect(t.labels.get(d)![`${IMAGE_NAME_LABEL_PREFIX}docker.io/library/app:3`]).toMatch(/^\d{4}-/);
    expect(t.labels.get(d)![app1]).not.toBe('first');
    // The root label gone (its names kept): written again.
    const { [GC_ROOT_LABEL]: _root, ...rest } = t.labels.get(d)!;
    t.labels.set(d, rest);
    await exp('app:1');
    expect(t.labels.get(d)![GC_ROOT_LABEL]).toMatch(/^\d{4}-/);
  });

  it('pushes layers, config, then the manifest by tag (or by digest), and reports canonical names', async () => {
    const calls: string[] = [];
    const registry: RegistryClient = {
      resolve: () => Promise.reject(new Error('unused')),
      getManifest: () => Promise.reject(new Error('unused')),
      fetch: () => (async function* () {})(),
      withCredentials: () => registry,
      credentialsKeyFor: async () => 'anonymous',
      async pushBlob(ref: Reference, desc: Descriptor, data: () => AsyncIterable<Uint8Array>, _signal?: AbortSignal, options?: PushBlobOptions) {
        if (options?.mountFrom) {
          calls.push(`mount ${ref.path} ${desc.digest === base.digest ? 'base' : desc.digest} from ${String(options.mountFrom)}`);
          return 'mounted';
        }
        const parts: Uint8Array[] = [];
        for await (const c of data()) parts.push(c);
        expect(digestOf(Buffer.concat(parts))).toBe(desc.digest);
        calls.push(`blob ${ref.path} ${desc.digest === run.digest ? 'layer' : desc.mediaType}`);
        return 'uploaded';
      },
      async pushManifest(ref: Reference, desc: Descriptor) {
        calls.push(`manifest ${ref.domain}/${ref.path}:${ref.tag ?? '-'}@${ref.digest ?? '-'} ${desc.mediaType}`);
      },
    };
    const t = fakeTier([run], { registry });
    const res = await t.client.export({ buildId: 'b', sessionId: 's', type: 'image', workerId: 'w1', ref: 'r1', imageConfig, attrs: { name: '127.0.0.1:5000/a/b:v1', push: 'true', 'name-canonical': 'true', 'oci-mediatypes': 'false' } });
    const digest = res.response['containerimage.digest']!;
    expect(calls).toEqual(['blob a/b layer', 'blob a/b application/vnd.docker.container.image.v1+json', 'manifest 127.0.0.1:5000/a/b:v1@- application/vnd.docker.distribution.manifest.v2+json']);
    expect(res.response['image.name']).toBe(`127.0.0.1:5000/a/b:v1,127.0.0.1:5000/a/b@${digest}`);
    calls.length = 0;
    const byDigest = await t.client.export({ buildId: 'b', sessionId: 's', type: 'image', workerId: 'w1', ref: 'r1', imageConfig, attrs: { name: '127.0.0.1:5000/a/b:v1', push: 'true', 'push-by-digest': 'true' } });
    expect(calls.at(-1)).toBe('manifest 127.0.0.1:5000/a/b:-@- application/vnd.oci.image.manifest.v1+json');
    expect(byDigest.response['image.name']).toBe('127.0.0.1:5000/a/b');

    // A base layer a pull found in other repositories of the same registry is mounted from them.
    const withBase = fakeTier([base, run], { registry });
    withBase.labels.set(base.digest, { [distributionSourceLabel('127.0.0.1:5000')]: 'team/base,a/b', [distributionSourceLabel('docker.io')]: 'library/busybox' });
    calls.length = 0;
    await withBase.client.export({ buildId: 'b', sessionId: 's', type: 'image', workerId: 'w1', ref: 'r1', imageConfig, attrs: { name: '127.0.0.1:5000/a/b:v2', push: 'true' } });
    expect(calls.slice(0, 2).sort()).toEqual(['blob a/b layer', 'mount a/b base from team/base']);
    calls.length = 0;
    await withBase.client.export({ buildId: 'b', sessionId: 's', type: 'image', workerId: 'w1', ref: 'r1', imageConfig, attrs: { name: 'example.com/a/b:v2', push: 'true' } });
    expect(calls.filter((c) => c.startsWith('mount'))).toEqual([]); // another registry: uploaded
  });
});

describe('multi-platform exports', () => {
  const configOf = (architecture: string) => Buffer.from(JSON.stringify({ architecture, os: 'linux', config: { Cmd: ['/bin/hello'] }, rootfs: { type: 'layers', diff_ids: [] }, history: [{ created_by: 'RUN make' }] }));
  const platforms = [
    { platform: 'linux/amd64', workerId: 'w1', ref: 'r1', imageConfig: configOf('amd64') },
    { platform: 'linux/arm64', workerId: 'w1', ref: 'r2', imageConfig: configOf('arm64') },
  ];
  const exportAll = (t: ReturnType<typeof fakeTier>, type: string, attrs: Record<string, string>) =>
    t.client.export({ buildId: 'b', sessionId: 's', type, workerId: 'w1', ref: 'r1', imageConfig, attrs, platforms });

  it('type=oci: an image index with one manifest per platform, annotations where their prefixes say', async () => {
    const t = fakeTier([run]);
    const res = await exportAll(t, 'oci', {
      'session.output': 'o', name: 'app:v1', 'source-date-epoch': '0',
      'annotation-index.org.example.i': 'i', 'annotation-index-descriptor.org.example.id': 'id',
      'annotation-manifest.org.example.m': 'm', 'annotation-manifest[linux/arm64].org.example.arm': 'yes',
      'annotation-manifest-descriptor[linux/amd64].org.example.md': 'amd',
    });
    expect(t.getLayersCalls.map((c) => c.ref).sort()).toEqual(['r1', 'r2']);
    const files = await untar(t.written.get('o')!);
    const layout = json(files.get('index.json'));
    expect(layout.annotations).toBeUndefined();
    expect(layout.manifests).toHaveLength(1);
    const top = layout.manifests[0];
    expect(top).toMatchObject({ mediaType: 'application/vnd.oci.image.index.v1+json', digest: res.response['containerimage.digest'] });
    expect(top.annotations).toMatchObject({ 'org.example.id': 'id', 'io.containerd.image.name': 'docker.io/library/app:v1', 'org.opencontainers.image.ref.name': 'v1' });
    const indexBytes = blobOf(files, top.digest)!;
    expect(digestOf(indexBytes)).toBe(top.digest);
    const index = json(indexBytes);
    expect(index.annotations).toEqual({ 'org.example.i': 'i' });
    expect(index.manifests.map((m: Descriptor) => m.platform)).toEqual([{ architecture: 'amd64', os: 'linux' }, { architecture: 'arm64', os: 'linux' }]);
    expect(index.manifests.map((m: Descriptor) => m.annotations)).toEqual([{ 'org.example.md': 'amd' }, undefined]);
    const manifests = index.manifests.map((m: Descriptor) => json(blobOf(files, m.digest)));
    expect(manifests.map((m: any) => m.annotations)).toEqual([{ 'org.example.m': 'm' }, { 'org.example.m': 'm', 'org.example.arm': 'yes' }]);
    expect(manifests.map((m: any) => json(blobOf(files, m.config.digest)).architecture)).toEqual(['amd64', 'arm64']);
    expect(res.response['containerimage.config.digest']).toBeUndefined();
    expect(JSON.parse(Buffer.from(res.response['containerimage.descriptor']!, 'base64').toString())).toEqual({ mediaType: 'application/vnd.oci.image.index.v1+json', digest: top.digest, size: indexBytes.length });
    expect(t.labels.get(top.digest)).toMatchObject({ 'containerd.io/gc.ref.content.m.0': index.manifests[0].digest, 'containerd.io/gc.ref.content.m.1': index.manifests[1].digest });
  });

  it('type=docker refuses a multi-platform result, as buildx does', async () => {
    const t = fakeTier([run]);
    await expect(exportAll(t, 'docker', { 'session.output': 'o' })).rejects.toMatchObject({ code: 'failed_precondition', message: expect.stringContaining('does not currently support exporting manifest lists') });
    expect(t.getLayersCalls).toHaveLength(0);
  });

  it('type=local and type=tar: one folder per platform, hard links kept inside their folder', async () => {
    const t = fakeTier([run]);
    await exportAll(t, 'tar', { 'session.output': 'o' });
    const tar: { name: string; type: string; linkname: string }[] = [];
    async function* once() {
      yield t.written.get('o')!;
    }
    for await (const e of readTarEntries(once())) tar.push({ name: e.header.name, type: e.header.type, linkname: e.header.linkname });
    expect(tar).toEqual([
      { name: 'linux_amd64', type: 'directory', linkname: '' },
      { name: 'linux_amd64/etc', type: 'directory', linkname: '' },
      { name: 'linux_amd64/etc/r1', type: 'file', linkname: '' },
      { name: 'linux_amd64/etc/link', type: 'link', linkname: 'linux_amd64/etc/r1' },
      { name: 'linux_arm64', type: 'directory', linkname: '' },
      { name: 'linux_arm64/etc', type: 'directory', linkname: '' },
      { name: 'linux_arm64/etc/r2', type: 'file', linkname: '' },
      { name: 'linux_arm64/etc/link', type: 'link', linkname: 'linux_arm64/etc/r2' },
    ]);
    const files = await untar(t.written.get('o')!);
    expect(files.get('linux_arm64/etc/r2')!.toString()).toBe('content of r2\n');
  });

  it('type=image,push=true: each platform manifest by digest, then the index under the tag', async () => {
    const calls: string[] = [];
    const registry: RegistryClient = {
      resolve: () => Promise.reject(new Error('unused')),
      getManifest: () => Promise.reject(new Error('unused')),
      fetch: () => (async function* () {})(),
      withCredentials: () => registry,
      credentialsKeyFor: async () => 'anonymous',
      async pushBlob(_ref: Reference, desc: Descriptor, data: () => AsyncIterable<Uint8Array>) {
        for await (const _ of data());
        calls.push(`blob ${desc.mediaType}`);
        return 'uploaded';
      },
      async pushManifest(ref: Reference, desc: Descriptor) {
        calls.push(`manifest ${ref.tag ?? '-'} ${desc.mediaType}`);
      },
    };
    const t = fakeTier([run], { registry });
    const res = await exportAll(t, 'image', { name: '127.0.0.1:5000/a/b:v1', push: 'true' });
    expect(calls.filter((c) => c.startsWith('manifest'))).toEqual([
      'manifest - application/vnd.oci.image.manifest.v1+json',
      'manifest - application/vnd.oci.image.manifest.v1+json',
      'manifest v1 application/vnd.oci.image.index.v1+json',
    ]);
    expect(t.labels.get(res.response['containerimage.digest']!)).toMatchObject({ [GC_ROOT_LABEL]: expect.any(String) });
  });
});
