// The client against a real registry (Debian's docker-registry, the reference
// distribution server), checked from outside with skopeo.
import { execFile } from 'node:child_process';
import { randomBytes, createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { findRegistry, freePort, makeImage, makeIndex, startRegistry, type TestBlob, type TestImage, type TestRegistry } from '@kiln/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRegistryClient, type RegistryClientOptions } from './client.js';
import { staticCredentials } from './credentials.js';
import { resolveImage } from './image.js';
import { MediaType, type Descriptor } from './media.js';
import { parsePlatform } from './platform.js';
import { parseReference, type Reference } from './reference.js';
import type { RegistryClient } from './registry.js';

const run = promisify(execFile);
const SKOPEO = '/usr/bin/skopeo';
const fast: RegistryClientOptions = { retry: { attempts: 3, baseDelayMs: 10, maxDelayMs: 50 } };

async function collect(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const c of it) parts.push(c);
  return Buffer.concat(parts);
}

async function* once(data: Uint8Array): AsyncGenerator<Uint8Array> {
  yield data;
}

async function pushImage(client: RegistryClient, ref: Reference, image: TestImage): Promise<void> {
  for (const b of image.blobs) await client.pushBlob(ref, b.descriptor, () => once(b.data));
  await client.pushManifest({ ...ref, tag: undefined, digest: undefined }, image.manifest.descriptor, image.manifest.data);
}

async function skopeoJson(...args: string[]): Promise<Record<string, unknown>> {
  const { stdout } = await run(SKOPEO, args, { maxBuffer: 16 << 20 });
  return JSON.parse(stdout) as Record<string, unknown>;
}

function randomBlob(size: number): TestBlob {
  const data = randomBytes(size);
  return { descriptor: { mediaType: 'application/octet-stream', digest: `sha256:${createHash('sha256').update(data).digest('hex')}`, size }, data };
}

describe.skipIf(!findRegistry() || !existsSync(SKOPEO))('against a real registry (needs docker-registry and skopeo)', () => {
  let registry: TestRegistry;
  let client: RegistryClient;
  const methods: string[] = [];
  const amd64 = makeImage({ platform: 'linux/amd64' });
  const arm64 = makeImage({ platform: 'linux/arm64/v8', layers: [{ 'hello.txt': 'arm\n' }, { 'etc/os-release': 'ID=kiln\n' }] });
  const multi = makeIndex([amd64, arm64]);

  beforeAll(async () => {
    registry = await startRegistry();
    client = createRegistryClient({
      ...fast,
      fetch: (input, init) => {
        methods.push(`${init?.method ?? 'GET'} ${new URL(input instanceof Request ? input.url : input).pathname}`);
        return fetch(input, init);
      },
    });
  });
  afterAll(() => registry?.stop());

  const ref = (s: string) => parseReference(`${registry.host}/${s}`);

  it('pushes a two-platform index that skopeo reads back and copies', async () => {
    const r = ref('kiln/multi:v1');
    const results = [];
    for (const image of multi.images) {
      for (const b of image.blobs) results.push(await client.pushBlob(r, b.descriptor, () => once(b.data)));
      await client.pushManifest({ ...r, tag: undefined }, image.manifest.descriptor, image.manifest.data);
    }
    expect(results).toEqual(['uploaded', 'uploaded', 'uploaded', 'uploaded', 'uploaded']);
    await client.pushManifest(r, multi.index.descriptor, multi.index.data);
    // Pushing again finds every blob in place.
    expect(await client.pushBlob(r, amd64.config.descriptor, () => once(amd64.config.data))).toBe('exists');

    const raw = await run(SKOPEO, ['inspect', '--raw', '--tls-verify=false', `docker://${registry.host}/kiln/multi:v1`]);
    expect(raw.stdout).toBe(multi.index.data.toString());
    const arm = await skopeoJson('inspect', '--tls-verify=false', '--override-arch', 'arm64', `docker://${registry.host}/kiln/multi:v1`);
    expect(arm).toMatchObject({ Architecture: 'arm64', Os: 'linux', Layers: arm64.layers.map((l) => l.descriptor.digest) });

    const dir = await mkdtemp(join(tmpdir(), 'kiln-skopeo-'));
    try {
      await run(SKOPEO, ['copy', '--all', '--src-tls-verify=false', `docker://${registry.host}/kiln/multi:v1`, `oci:${dir}:v1`]);
      const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
      expect(index.manifests[0]?.digest).toBe(multi.index.descriptor.digest);
      for (const b of [...amd64.blobs, ...arm64.blobs, amd64.manifest, arm64.manifest]) {
        const hex = b.descriptor.digest.slice('sha256:'.length);
        expect((await readFile(join(dir, 'blobs', 'sha256', hex))).equals(b.data)).toBe(true);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('pulls it back: resolve, choose the platform, fetch verified', async () => {
    const r = ref('kiln/multi:v1');
    expect(await client.resolve(r)).toEqual({ mediaType: MediaType.OciIndex, digest: multi.index.descriptor.digest, size: multi.index.descriptor.size });
    const byDigest = await client.resolve({ ...r, tag: undefined, digest: arm64.manifest.descriptor.digest });
    expect(byDigest).toMatchObject({ mediaType: MediaType.OciManifest, size: arm64.manifest.data.length });

    for (const [platform, image] of [['linux/arm64', arm64], ['linux/amd64', amd64]] as const) {
      const resolved = await resolveImage(client, r, parsePlatform(platform));
      expect(resolved.root.digest).toBe(multi.index.descriptor.digest);
      expect(resolved.manifest.descriptor.digest).toBe(image.manifest.descriptor.digest);
      expect(Buffer.from(resolved.manifest.bytes).equals(image.manifest.data)).toBe(true);
      const m = resolved.manifest.manifest;
      const config = await collect(client.fetch(r, m.config));
      expect(JSON.parse(config.toString())).toMatchObject({ architecture: image.platform.architecture });
      for (const [i, layer] of m.layers.entries()) expect((await collect(client.fetch(r, layer))).equals(image.layers[i]!.data)).toBe(true);
    }
    // A manifest fetched as a stream, by digest.
    expect((await collect(client.fetch(r, amd64.manifest.descriptor))).equals(amd64.manifest.data)).toBe(true);
  });

  it('pushes and resolves Docker schema 2 manifests and manifest lists', async () => {
    const d1 = makeImage({ platform: 'linux/amd64', format: 'docker' });
    const d2 = makeImage({ platform: 'linux/arm/v7', format: 'docker' });
    const list = makeIndex([d1, d2], 'docker');
    const r = ref('kiln/docker:list');
    await pushImage(client, r, d1);
    await pushImage(client, r, d2);
    await client.pushManifest(r, list.index.descriptor, list.index.data);
    await client.pushManifest(ref('kiln/docker:single'), d1.manifest.descriptor, d1.manifest.data);

    expect((await client.resolve(r)).mediaType).toBe(MediaType.DockerManifestList);
    expect((await client.resolve(ref('kiln/docker:single'))).mediaType).toBe(MediaType.DockerManifest);
    const resolved = await resolveImage(client, r, parsePlatform('linux/arm'));
    expect(resolved.manifest.descriptor.digest).toBe(d2.manifest.descriptor.digest);
    expect(resolved.manifest.kind).toBe('manifest');
    const single = await resolveImage(client, ref('kiln/docker:single'), parsePlatform('linux/amd64'));
    expect(single.index).toBeUndefined();
    expect(single.manifest.mediaType).toBe(MediaType.DockerManifest);
    const inspected = await skopeoJson('inspect', '--tls-verify=false', `docker://${registry.host}/kiln/docker:single`);
    expect(inspected.Digest).toBe(d1.manifest.descriptor.digest);
  });

  it('mounts a blob from another repository instead of uploading it', async () => {
    const blob = randomBlob(4096);
    expect(await client.pushBlob(ref('kiln/source'), blob.descriptor, () => once(blob.data))).toBe('uploaded');
    methods.length = 0;
    let asked = 0;
    const result = await client.pushBlob(ref('kiln/target'), blob.descriptor, () => (asked++, once(blob.data)), undefined, { mountFrom: 'kiln/source' });
    expect(result).toBe('mounted');
    expect(asked).toBe(0);
    expect(methods).toEqual([`HEAD /v2/kiln/target/blobs/${blob.descriptor.digest}`, 'POST /v2/kiln/target/blobs/uploads/']);
    expect((await collect(client.fetch(ref('kiln/target'), blob.descriptor))).equals(blob.data)).toBe(true);
    // A source that does not hold it: the registry opens an upload instead, which the client uses.
    const other = randomBlob(100);
    expect(await client.pushBlob(ref('kiln/target'), other.descriptor, () => once(other.data), undefined, { mountFrom: ['kiln/nothing', 'kiln/source'] })).toBe('uploaded');
  });

  it('uploads in chunks with Content-Range', async () => {
    const blob = randomBlob(5500);
    methods.length = 0;
    // The source's own chunking differs from the upload's.
    const source = async function* () {
      for (let i = 0; i < blob.data.length; i += 777) yield blob.data.subarray(i, i + 777);
    };
    expect(await client.pushBlob(ref('kiln/chunked'), blob.descriptor, source, undefined, { chunkSize: 2000 })).toBe('uploaded');
    expect(methods.filter((m) => m.startsWith('PATCH'))).toHaveLength(3);
    expect(methods.at(-1)).toMatch(/^PUT \/v2\/kiln\/chunked\/blobs\/uploads\//);
    expect((await collect(client.fetch(ref('kiln/chunked'), blob.descriptor))).equals(blob.data)).toBe(true);
  });

  it('refuses content that does not match its descriptor before the registry commits it', async () => {
    const blob = randomBlob(1000);
    const wrong = { ...blob.descriptor, digest: `sha256:${'0'.repeat(64)}` };
    await expect(client.pushBlob(ref('kiln/bad'), wrong, () => once(blob.data))).rejects.toMatchObject({
      code: 'failed_precondition',
      message: expect.stringContaining(`failed to push blob ${wrong.digest} to ${registry.host}/kiln/bad: content is ${blob.descriptor.digest}`),
    });
    await expect(client.pushBlob(ref('kiln/bad'), { ...blob.descriptor, size: 999 }, () => once(blob.data), undefined, { chunkSize: 300 })).rejects.toMatchObject({
      code: 'failed_precondition',
    });
    await expect(collect(client.fetch(ref('kiln/bad'), blob.descriptor))).rejects.toMatchObject({ code: 'not_found' });
    await expect(client.pushManifest(ref('kiln/bad:x'), { ...amd64.manifest.descriptor, size: 1 }, amd64.manifest.data)).rejects.toMatchObject({ code: 'invalid_argument' });
  });

  it('names the reference in not-found errors', async () => {
    const missing = ref('kiln/multi:nope');
    await expect(client.resolve(missing)).rejects.toMatchObject({
      code: 'not_found',
      message: `failed to resolve ${registry.host}/kiln/multi:nope: not found`,
      details: { reference: `${registry.host}/kiln/multi:nope`, status: 404 },
    });
    await expect(client.getManifest(ref('kiln/none:v1'))).rejects.toMatchObject({
      code: 'not_found',
      message: expect.stringMatching(new RegExp(`^failed to get manifest ${registry.host}/kiln/none:v1: not found \\(MANIFEST_UNKNOWN`)),
    });
    const blob = randomBlob(10);
    await expect(collect(client.fetch(ref('kiln/multi:v1'), blob.descriptor))).rejects.toMatchObject({
      code: 'not_found',
      message: expect.stringContaining(`failed to fetch ${registry.host}/kiln/multi@${blob.descriptor.digest}: not found`),
    });
  });

  it('pulls through a mirror first, and from the registry when the mirror lacks the image', async () => {
    const mirror = await startRegistry();
    try {
      const image = makeImage({ platform: 'linux/amd64', layers: [{ 'mirror.txt': 'from the mirror\n' }] });
      // The "registry" is a dead port: only the mirror has the image.
      const deadHost = `127.0.0.1:${await freePort()}`;
      await pushImage(client, parseReference(`${mirror.host}/kiln/m:v1`), image);
      await client.pushManifest(parseReference(`${mirror.host}/kiln/m:v1`), image.manifest.descriptor, image.manifest.data);
      const viaMirror = createRegistryClient({ ...fast, mirrors: { [deadHost]: [mirror.host] } });
      const r = parseReference(`${deadHost}/kiln/m:v1`);
      expect((await viaMirror.resolve(r)).digest).toBe(image.manifest.descriptor.digest);
      expect((await collect(viaMirror.fetch(r, image.layers[0]!.descriptor))).equals(image.layers[0]!.data)).toBe(true);
      // Pushes never go to mirrors.
      await expect(viaMirror.pushManifest(r, image.manifest.descriptor, image.manifest.data)).rejects.toMatchObject({ code: 'unavailable' });

      // The mirror lacks kiln/multi: the registry answers.
      const fallback = createRegistryClient({ ...fast, mirrors: { [registry.host]: [`http://${mirror.host}`] } });
      expect((await fallback.resolve(ref('kiln/multi:v1'))).digest).toBe(multi.index.descriptor.digest);
    } finally {
      await mirror.stop();
    }
  });

  describe('with htpasswd basic auth', () => {
    let secured: TestRegistry;
    beforeAll(async () => {
      secured = await startRegistry({ htpasswd: { user: 'kiln', password: 's3cret' } });
    });
    afterAll(() => secured?.stop());

    it('fails anonymous and wrong credentials with unauthenticated, works with the right ones', async () => {
      const r = parseReference(`${secured.host}/kiln/private:v1`);
      const anonymous = createRegistryClient(fast);
      await expect(anonymous.resolve(r)).rejects.toMatchObject({
        code: 'unauthenticated',
        message: `failed to resolve ${secured.host}/kiln/private:v1: unauthorized (HTTP 401)`,
      });
      await expect(anonymous.pushBlob(r, amd64.config.descriptor, () => once(amd64.config.data))).rejects.toMatchObject({
        code: 'unauthenticated',
        message: expect.stringContaining(`to ${secured.host}/kiln/private: unauthorized (HTTP 401)`),
      });
      const wrong = createRegistryClient({ ...fast, credentials: staticCredentials({ [secured.host]: { username: 'kiln', password: 'nope' } }) });
      await expect(wrong.resolve(r)).rejects.toMatchObject({ code: 'unauthenticated' });

      const right = createRegistryClient({ ...fast, credentials: staticCredentials({ [secured.host]: { username: 'kiln', password: 's3cret' } }) });
      await pushImage(right, r, amd64);
      await right.pushManifest(r, amd64.manifest.descriptor, amd64.manifest.data);
      const resolved = await resolveImage(right, r, parsePlatform('linux/amd64'));
      expect(resolved.manifest.descriptor.digest).toBe(amd64.manifest.descriptor.digest);
      expect((await collect(right.fetch(r, amd64.layers[0]!.descriptor))).equals(amd64.layers[0]!.data)).toBe(true);
      const inspected = await skopeoJson('inspect', '--tls-verify=false', '--creds', 'kiln:s3cret', `docker://${secured.host}/kiln/private:v1`);
      expect(inspected.Digest).toBe(amd64.manifest.descriptor.digest);
    });
  });
});
