import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { create, toBinary } from '@bufbuild/protobuf';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { content, llb, worker as workerApi } from '@kiln/api';
import { createKilnClient, createNodeTransport } from '@kiln/common';
import { findRegistry, makeImage, startKilnd, startRegistry, type Kilnd, type TestRegistry, e2eWorker } from '@kiln/testkit';

const sha = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const hasUmoci = (() => {
  try {
    execFileSync('umoci', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

async function push(registry: TestRegistry, repo: string, data: Buffer): Promise<void> {
  const start = await fetch(`${registry.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  const loc = new URL(start.headers.get('location')!, registry.url);
  loc.searchParams.set('digest', sha(data));
  const put = await fetch(loc, { method: 'PUT', body: data, headers: { 'content-type': 'application/octet-stream' } });
  if (put.status !== 201) throw new Error(`upload: HTTP ${put.status}`);
}

/** An op and the digest the worker checks it against. */
function op(init: Parameters<typeof create<typeof llb.OpSchema>>[1]): { bytes: Uint8Array; digest: string } {
  const bytes = toBinary(llb.OpSchema, create(llb.OpSchema, init));
  return { bytes, digest: sha(bytes) };
}

describe.skipIf(!findRegistry())(`layers of a build result in the content store [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let registry: TestRegistry;
  let daemon: Kilnd;
  let work: string;
  let imageRef: string;
  let img: ReturnType<typeof makeImage>;

  beforeAll(async () => {
    registry = await startRegistry();
    daemon = await startKilnd();
    work = mkdtempSync(join(tmpdir(), 'kiln-e2e-layers-'));
    img = makeImage({ layers: [{ 'etc/hostname': 'kiln\n', 'bin/old': 'old\n' }] });
    for (const b of img.blobs) await push(registry, 'kiln/layers', b.data);
    const put = await fetch(`${registry.url}/v2/kiln/layers/manifests/base`, { method: 'PUT', body: img.manifest.data, headers: { 'content-type': img.manifest.descriptor.mediaType } });
    if (put.status !== 201) throw new Error(`manifest: HTTP ${put.status}`);
    imageRef = `${registry.host}/kiln/layers:base`;
  }, 60_000);

  afterAll(async () => {
    await daemon?.stop();
    await registry?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('writes leased, reusable layers that GNU tar and umoci read', async () => {
    const transport = createNodeTransport(daemon.addr);
    const workers = createKilnClient(workerApi.WorkerService, transport);
    const store = createKilnClient(content.ContentService, transport);
    const run = async (o: { bytes: Uint8Array; digest: string }, inputRefs: string[], description: string) =>
      (await workers.run({ buildId: 'layers-e2e', sessionId: 's', vertexDigest: o.digest, op: o.bytes, inputRefs, description })).outputRefs[0]!;

    const src = op({ op: { case: 'source', value: { identifier: `docker-image://${imageRef}`, attrs: {} } }, platform: img.platform });
    const base = await run(src, [], `FROM ${imageRef}`);
    const edit = op({
      inputs: [{ digest: src.digest, index: 0n }],
      op: {
        case: 'file',
        value: {
          actions: [
            { input: 0n, secondaryInput: -1n, output: -1n, action: { case: 'mkfile', value: { path: '/etc/motd', mode: 0o644, data: new TextEncoder().encode('hi\n'), timestamp: -1n } } },
            { input: -2n, secondaryInput: -1n, output: 0n, action: { case: 'rm', value: { path: '/bin/old' } } },
          ],
        },
      },
    });
    const top = await run(edit, [base], 'RUN edit');

    const { lease } = await store.createLease({});
    const res = await workers.getLayers({ ref: top, compression: 'gzip', ociMediaTypes: true, lease: lease!.id });
    expect(res.layers.map((l) => [l.fromBase, l.mediaType, l.createdBy])).toEqual([
      [true, 'application/vnd.oci.image.layer.v1.tar+gzip', ''],
      [false, 'application/vnd.oci.image.layer.v1.tar+gzip', 'RUN edit'],
    ]);
    expect(res.layers[0]!.digest).toBe(img.layers[0]!.descriptor.digest);
    const blobs: Buffer[] = [];
    for (const l of res.layers) {
      const parts: Uint8Array[] = [];
      for await (const m of store.read({ digest: l.digest })) parts.push(m.data);
      const blob = Buffer.concat(parts);
      expect(sha(blob)).toBe(l.digest);
      expect(sha(gunzipSync(blob))).toBe(l.diffId);
      blobs.push(blob);
    }
    expect(execFileSync('tar', ['-tzf', '-'], { input: blobs[1] }).toString().trim().split('\n')).toEqual(['bin/', 'bin/.wh.old', 'etc/', 'etc/motd']);
    const leased = (await store.listLeaseResources({ lease: lease!.id })).digests;
    expect([...leased].sort()).toEqual(res.layers.map((l) => l.digest).sort());

    // The lease keeps them through a GC; a second call reuses the same blobs.
    await store.garbageCollect({});
    const again = await workers.getLayers({ ref: top, compression: 'gzip', ociMediaTypes: true, lease: lease!.id });
    expect(again.layers.map((l) => l.digest)).toEqual(res.layers.map((l) => l.digest));

    if (hasUmoci) {
      // An OCI layout around the layers: umoci applies them (whiteouts included) like any runtime would.
      const layout = join(work, 'layout');
      mkdirSync(join(layout, 'blobs', 'sha256'), { recursive: true });
      const put = (data: Buffer) => writeFileSync(join(layout, 'blobs', 'sha256', sha(data).slice(7)), data);
      blobs.forEach(put);
      const config = Buffer.from(JSON.stringify({ architecture: img.platform.architecture, os: img.platform.os, config: {}, rootfs: { type: 'layers', diff_ids: res.layers.map((l) => l.diffId) } }));
      put(config);
      const manifest = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
          layers: res.layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: Number(l.size) })),
        }),
      );
      put(manifest);
      writeFileSync(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
      writeFileSync(
        join(layout, 'index.json'),
        JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha(manifest), size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': 'latest' } }] }),
      );
      const bundle = join(work, 'bundle');
      execFileSync('umoci', ['unpack', '--image', `${layout}:latest`, bundle], { stdio: 'pipe' });
      expect(readFileSync(join(bundle, 'rootfs', 'etc', 'motd'), 'utf8')).toBe('hi\n');
      expect(readFileSync(join(bundle, 'rootfs', 'etc', 'hostname'), 'utf8')).toBe('kiln\n');
      expect(existsSync(join(bundle, 'rootfs', 'bin', 'old'))).toBe(false);
    }
    await workers.release({ refs: [top, base] });
    await store.deleteLease({ id: lease!.id });
  });
});
