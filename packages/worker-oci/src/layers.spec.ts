import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '@kiln/common';
import { FileChain, image } from '@kiln/llb';
import { createRegistryClient, parseReference, type RegistryClient } from '@kiln/registry';
import { findRegistry, makeImage, startRegistry, type TestImage, type TestRegistry } from '@kiln/testkit';
import type { SessionFiles, Worker } from '@kiln/worker';
import { createEventCollector, createMemoryContent, solve, type MemoryContent } from '@kiln/worker/testing';
import { createOciWorker } from './oci-worker.js';

const noSessions: SessionFiles = {
  fetchFiles() {
    throw new Error('no session in this test');
  },
};

const sha = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

describe.skipIf(!findRegistry())('layers of a ref on a pulled image', () => {
  let registry: TestRegistry;
  let client: RegistryClient;
  let dir: string;
  let store: MemoryContent;
  let worker: Worker;

  async function pushImage(tag: string, img: TestImage): Promise<string> {
    const ref = parseReference(`${registry.host}/kiln/layers:${tag}`);
    for (const b of img.blobs) await client.pushBlob(ref, b.descriptor, async function* () { yield b.data; });
    await client.pushManifest(ref, { mediaType: img.manifest.descriptor.mediaType, digest: img.manifest.descriptor.digest, size: img.manifest.descriptor.size }, img.manifest.data);
    return `${registry.host}/kiln/layers:${tag}`;
  }

  beforeAll(async () => {
    registry = await startRegistry();
    client = createRegistryClient({});
    dir = await mkdtemp(path.join(tmpdir(), 'kiln-oci-layers-'));
    store = createMemoryContent();
    worker = createOciWorker({
      id: 'oci-layers',
      root: dir,
      sessions: noSessions,
      publish: createEventCollector().publish,
      logger: silentLogger(),
      registry: client,
      content: store.client,
      platforms: [{ os: 'linux', architecture: 'amd64' }],
    });
  }, 30_000);

  afterAll(async () => {
    await worker?.close();
    await registry?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('reuses the pulled blobs as base layers, kept in the content store while pulling, then adds the op layer', async () => {
    const img = makeImage({ layers: [{ 'etc/hostname': 'kiln\n' }, { 'bin/tool': 'tool\n' }], format: 'docker' });
    const name = await pushImage('base', img);
    const state = FileChain.start().mkfile('/etc/motd', 0o644, new TextEncoder().encode('hi\n')).apply(image(name), { description: 'RUN echo hi > /etc/motd' });
    const ref = (await solve(worker, state))!;
    // The pull wrote the layer blobs to the store as they streamed by.
    for (const l of img.layers) expect(store.blobs.get(l.descriptor.digest)?.data.equals(l.data)).toBe(true);

    const layers = await worker.getLayers(ref, { lease: 'export-1' });
    expect(layers).toHaveLength(3);
    expect(layers.slice(0, 2).map((l) => [l.digest, l.size, l.fromBase, l.mediaType])).toEqual(
      img.layers.map((l) => [l.descriptor.digest, l.descriptor.size, true, 'application/vnd.oci.image.layer.v1.tar+gzip']),
    );
    const config = JSON.parse(img.config.data.toString()) as { rootfs: { diff_ids: string[] } };
    expect(layers.slice(0, 2).map((l) => l.diffId)).toEqual(config.rootfs.diff_ids);
    expect(layers[2]).toMatchObject({ fromBase: false, createdBy: 'RUN echo hi > /etc/motd' });
    const top = store.blobs.get(layers[2]!.digest)!.data;
    expect(execFileSync('tar', ['-tzf', '-'], { input: top }).toString().trim().split('\n')).toEqual(['etc/', 'etc/motd']);
    expect([...store.leases.get('export-1')!].sort()).toEqual(layers.map((l) => l.digest).sort());

    // Docker media types keep the base blob; a lost base blob is fetched again from the registry.
    store.blobs.delete(img.layers[0]!.descriptor.digest);
    const docker = await worker.getLayers(ref, { ociMediaTypes: false });
    expect(docker[0]).toMatchObject({ digest: img.layers[0]!.descriptor.digest, mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip' });
    expect(store.blobs.has(img.layers[0]!.descriptor.digest)).toBe(true);

    // force_compression recompresses base layers; their diff ids stay.
    const plain = await worker.getLayers(ref, { compression: 'uncompressed', forceCompression: true });
    expect(plain.map((l) => l.diffId)).toEqual(layers.map((l) => l.diffId));
    for (const l of plain) expect(sha(store.blobs.get(l.digest)!.data)).toBe(l.diffId);
    expect(plain.map((l) => l.mediaType)).toEqual(Array(3).fill('application/vnd.oci.image.layer.v1.tar'));
  });
});
