import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '@kiln/common';
import { image } from '@kiln/llb';
import { createRegistryClient, parseReference, type RegistryClient } from '@kiln/registry';
import { findRegistry, makeImage, makeIndex, makeTar, startRegistry, type TestBlob, type TestImage, type TestRegistry } from '@kiln/testkit';
import type { SessionFiles, Worker } from '@kiln/worker';
import { createEventCollector, readTar, solve } from '@kiln/worker/testing';
import { createOciWorker } from './oci-worker.js';

const noSessions: SessionFiles = {
  fetchFiles() {
    throw new Error('no session in this test');
  },
};

const sha = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

describe.skipIf(!findRegistry())('docker-image sources against a registry', () => {
  let registry: TestRegistry;
  let client: RegistryClient;
  let blobGets = 0;
  let dir: string;
  let worker: Worker;
  const collector = createEventCollector();

  async function pushImage(tag: string, img: TestImage | { index: TestBlob; images: TestImage[] }): Promise<string> {
    const ref = parseReference(`${registry.host}/kiln/test:${tag}`);
    const images = 'images' in img ? img.images : [img];
    for (const i of images) {
      for (const b of i.blobs) await client.pushBlob(ref, b.descriptor, async function* () { yield b.data; });
      if ('images' in img) await client.pushManifest({ ...ref, tag: undefined }, i.manifest.descriptor, i.manifest.data);
    }
    const top = 'images' in img ? img.index : img.manifest;
    await client.pushManifest(ref, { mediaType: top.descriptor.mediaType, digest: top.descriptor.digest, size: top.descriptor.size }, top.data);
    return `${registry.host}/kiln/test:${tag}`;
  }

  beforeAll(async () => {
    registry = await startRegistry();
    client = createRegistryClient({
      fetch: (input, init) => {
        const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
        if ((init?.method ?? 'GET') === 'GET' && url.includes('/blobs/sha256:')) blobGets++;
        return fetch(input, init);
      },
    });
    dir = await mkdtemp(path.join(tmpdir(), 'kiln-image-source-'));
    worker = createOciWorker({ id: 'oci-image', root: dir, sessions: noSessions, publish: collector.publish, logger: silentLogger(), registry: client, platforms: [{ os: 'linux', architecture: 'amd64' }] });
  }, 30_000);

  afterAll(async () => {
    await worker?.close();
    await registry?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const tree = async (ref: string) =>
    Object.fromEntries((await readTar(worker.exportRef(ref))).map((e) => [e.name, e.type === 'symlink' ? `-> ${e.linkname}` : e.data.toString()]));

  it('pulls a 2-layer image with a whiteout, then reuses its layer snapshots', async () => {
    const img = makeImage({
      layers: [
        { 'etc/hostname': 'kiln\n', 'bin/old': 'old\n', 'bin/keep': 'keep\n' },
        { 'bin/.wh.old': '', 'bin/new': 'new\n' },
      ],
    });
    const name = await pushImage('two', img);
    const before = blobGets;
    const ref = (await solve(worker, image(name)))!;
    expect(await tree(ref)).toEqual({ 'bin/': '', 'bin/keep': 'keep\n', 'bin/new': 'new\n', 'etc/': '', 'etc/hostname': 'kiln\n' });
    expect(blobGets - before).toBe(3); // config + 2 layers
    const status = collector.events.filter((e) => e.event.event.case === 'status').map((e) => e.event.event.value as { id: string; completed?: unknown });
    expect(status.some((s) => s.id === `pulling ${name}:` && s.completed)).toBe(true);

    const again = (await solve(worker, image(name)))!;
    expect(blobGets - before).toBe(3); // no blob fetched again
    expect(await tree(again)).toEqual(await tree(ref));
    await worker.release([ref]);
    // Releasing one ref leaves the layer snapshots for the other and for later pulls.
    expect(await tree(again)).toHaveProperty('bin/new', 'new\n');
    await worker.release([again]);
    const third = (await solve(worker, image(name)))!;
    expect(blobGets - before).toBe(3);
    expect(await tree(third)).toHaveProperty('bin/keep', 'keep\n');
    await worker.release([third]);
  });

  it('shares a lower layer with another image and applies concurrent pulls once', async () => {
    const base = { 'etc/hostname': 'kiln\n', 'bin/old': 'old\n', 'bin/keep': 'keep\n' };
    const img = makeImage({ layers: [base, { 'etc/.wh.hostname': '', 'x.txt': 'x\n' }] });
    const name = await pushImage('shared', img);
    const before = blobGets;
    const [a, b] = await Promise.all([solve(worker, image(name)), solve(worker, image(name))]);
    // The base layer came from the first test; the top layer is fetched once.
    expect(blobGets - before).toBeLessThanOrEqual(3);
    expect(blobGets - before).toBeGreaterThanOrEqual(2);
    expect(Object.keys(await tree(a!))).toEqual(['bin/', 'bin/keep', 'bin/old', 'etc/', 'x.txt']);
    await worker.release([a!, b!]);
  });

  it('picks the manifest of the op platform from an index', async () => {
    const idx = makeIndex([makeImage({ platform: 'linux/amd64' }), makeImage({ platform: 'linux/arm64' })]);
    const name = await pushImage('multi', idx);
    const arm = (await solve(worker, image(name, { platform: { os: 'linux', architecture: 'arm64' } })))!;
    expect(await tree(arm)).toEqual({ 'hello.txt': 'hello from linux/arm64\n' });
    const dflt = (await solve(worker, image(name)))!;
    expect(await tree(dflt)).toEqual({ 'hello.txt': 'hello from linux/amd64\n' });
    await worker.release([arm, dflt]);
  });

  it('fails a missing tag with not_found naming the reference', async () => {
    const name = `${registry.host}/kiln/test:nope`;
    const s = image(name);
    await expect(solve(worker, s)).rejects.toMatchObject({
      code: 'not_found',
      message: expect.stringContaining(name),
      details: expect.objectContaining({ digest: s.output!.vertex.marshal().digest }),
    });
  });

  it('fails a layer whose content does not match its diff id, naming the layer', async () => {
    const tar = makeTar({ 'a.txt': 'a\n' });
    const gz = gzipSync(tar);
    const layer: TestBlob = { descriptor: { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha(gz), size: gz.length }, data: gz };
    const cfgData = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [sha(Buffer.from('other'))] } }));
    const config: TestBlob = { descriptor: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(cfgData), size: cfgData.length }, data: cfgData };
    const mData = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: config.descriptor, layers: [layer.descriptor] }),
    );
    const manifest: TestBlob = { descriptor: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha(mData), size: mData.length }, data: mData };
    const name = await pushImage('bad', { platform: { os: 'linux', architecture: 'amd64' }, layers: [layer], config, manifest, blobs: [layer, config] });
    await expect(solve(worker, image(name))).rejects.toMatchObject({ code: 'vertex', message: expect.stringContaining(layer.descriptor.digest) });
  });

  it('applies zstd layers (and layers whose media type says another compression) by their bytes', async () => {
    const tar = makeTar({ 'z.txt': 'zstd\n' });
    const zst = execFileSync('zstd', ['-q', '-c'], { input: tar });
    const zLayer: TestBlob = { descriptor: { mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd', digest: sha(zst), size: zst.length }, data: zst };
    const gz = gzipSync(makeTar({ 'g.txt': 'gzip\n' }));
    const mislabeled: TestBlob = { descriptor: { mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd', digest: sha(gz), size: gz.length }, data: gz };
    const diffIds = [sha(tar), sha(makeTar({ 'g.txt': 'gzip\n' }))];
    const cfgData = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: diffIds } }));
    const config: TestBlob = { descriptor: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(cfgData), size: cfgData.length }, data: cfgData };
    const layers = [zLayer, mislabeled];
    const mData = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: config.descriptor, layers: layers.map((l) => l.descriptor) }),
    );
    const manifest: TestBlob = { descriptor: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha(mData), size: mData.length }, data: mData };
    const name = await pushImage('zstd', { platform: { os: 'linux', architecture: 'amd64' }, layers, config, manifest, blobs: [...layers, config] });
    const ref = (await solve(worker, image(name)))!;
    expect(await tree(ref)).toEqual({ 'g.txt': 'gzip\n', 'z.txt': 'zstd\n' });
    await worker.release([ref]);
  });

  it('finds its layer snapshots again after a restart on the same root', async () => {
    const img = makeImage({ layers: [{ 'a.txt': 'a\n' }, { 'b.txt': 'b\n' }] });
    const name = await pushImage('restart', img);
    const root = await mkdtemp(path.join(tmpdir(), 'kiln-image-restart-'));
    const make = () => createOciWorker({ id: 'oci-restart', root, sessions: noSessions, publish: collector.publish, logger: silentLogger(), registry: client, platforms: [{ os: 'linux', architecture: 'amd64' }] });
    try {
      const w1 = make();
      const before = blobGets;
      const r1 = (await solve(w1, image(name)))!;
      expect(blobGets - before).toBe(3);
      await w1.release([r1]);
      await w1.close();

      const w2 = make();
      const r2 = (await solve(w2, image(name)))!;
      expect(blobGets - before).toBe(4); // only the config again: no layer is fetched
      expect(Object.keys(await readTar(w2.exportRef(r2))).length).toBe(2);
      await w2.release([r2]);
      await w2.close();
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
