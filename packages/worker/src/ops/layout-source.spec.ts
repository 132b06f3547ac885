import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { silentLogger } from '@kiln/common';
import { ociLayout } from '@kiln/llb';
import { createDirectorySnapshotter } from '@kiln/snapshotter';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTar, createEventCollector, createFakeSession, FakeExecutor, readTar, solve } from '../testing/index.js';
import { createWorker, type Worker } from '../worker.js';

const sha = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const amd64 = { os: 'linux', architecture: 'amd64' };

/** Writes an OCI layout with one single-layer image tagged `tag`; returns the manifest digest and layer blob path. */
async function writeLayout(dir: string, files: Record<string, string>, tag: string) {
  await mkdir(path.join(dir, 'blobs', 'sha256'), { recursive: true });
  const put = async (bytes: Uint8Array, mediaType: string) => {
    const digest = sha(bytes);
    await writeFile(path.join(dir, 'blobs', 'sha256', digest.slice(7)), bytes);
    return { mediaType, digest, size: bytes.byteLength };
  };
  const tar = Buffer.from(await buildTar(Object.entries(files).map(([name, data]) => ({ name, data, mode: 0o644 }))));
  const layer = await put(gzipSync(tar), 'application/vnd.oci.image.layer.v1.tar+gzip');
  const config = await put(
    Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Env: ['A=1'] }, rootfs: { type: 'layers', diff_ids: [sha(tar)] } })),
    'application/vnd.oci.image.config.v1+json',
  );
  const manifest = await put(
    Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config, layers: [layer] })),
    'application/vnd.oci.image.manifest.v1+json',
  );
  await writeFile(path.join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  await writeFile(path.join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ ...manifest, annotations: { 'org.opencontainers.image.ref.name': tag } }] }));
  return { manifest: manifest.digest, layerPath: path.join(dir, 'blobs', 'sha256', layer.digest.slice(7)) };
}

describe('oci-layout:// sources', () => {
  let root: string;
  let worker: Worker;
  const session = createFakeSession();
  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'kiln-layout-src-'));
    worker = createWorker({
      id: 'w-layout',
      backend: 'oci',
      snapshotter: createDirectorySnapshotter({ root: path.join(root, 'snapshots') }),
      executor: new FakeExecutor(),
      sessions: session.client,
      publish: createEventCollector().publish,
      logger: silentLogger(),
    });
  });
  afterAll(async () => {
    await worker.close();
    await rm(root, { recursive: true, force: true });
  });

  it('pulls the image from the client layout over the session, by tag or pinned digest', async () => {
    const dir = path.join(root, 'layout1');
    const { manifest } = await writeLayout(dir, { 'etc/greeting': 'hello from the layout' }, 'v1');
    session.dirs.set('oci-1', { dir });
    for (const ref of ['oci-1:v1', `oci-1@${manifest}`]) {
      const out = await solve(worker, ociLayout(ref, { platform: amd64 }));
      const files = (await readTar(worker.exportRef(out!))).filter((e) => e.type === 'file');
      expect(files.map((e) => [e.name, e.data.toString()])).toEqual([['etc/greeting', 'hello from the layout']]);
      await worker.release([out!]);
    }
    // Only the exact files were asked for: index.json and blobs by digest.
    expect(session.fetches.every((f) => f.dirName === 'oci-1' && f.includePatterns.length === 1 && /^(index\.json|blobs\/sha256\/[0-9a-f]{64})$/.test(f.includePatterns[0]!))).toBe(true);
  });

  it('fails naming the layout for an unknown tag, and on a layer that does not match its digest', async () => {
    const dir = path.join(root, 'layout2');
    const { layerPath } = await writeLayout(dir, { f: 'original' }, 'v1');
    session.dirs.set('oci-2', { dir });
    await expect(solve(worker, ociLayout('oci-2:v9', { platform: amd64 }))).rejects.toThrow('oci-layout://oci-2:v9: tag "v9" not found in index.json (tags: v1)');
    const tar = Buffer.from(await buildTar([{ name: 'f', data: 'tampered', mode: 0o644 }]));
    await writeFile(layerPath, gzipSync(tar));
    await expect(solve(worker, ociLayout('oci-2:v1', { platform: amd64 }))).rejects.toThrow(/does not match/);
  });
});
