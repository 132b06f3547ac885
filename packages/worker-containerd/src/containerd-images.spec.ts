import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { image } from '@kiln/llb';
import { findContainerd, findRegistry, pushBusyboxImage, startContainerd, startRegistry, type TestContainerd, type TestRegistry } from '@kiln/testkit';
import { createEventCollector, createFakeSession, solve } from '@kiln/worker/testing';
import { imageLeaseId } from './containerd/image-recorder.js';
import { createContainerdWorker } from './containerd-worker.js';

const available = process.getuid?.() === 0 && !!findContainerd() && !!findRegistry();

/** The real `ctr` against the test's containerd, in Kiln's namespace. */
function ctr(containerd: TestContainerd, ...args: string[]): string[] {
  return execFileSync('ctr', ['--address', containerd.address, '--namespace', 'kiln', ...args], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean);
}

describe.skipIf(!available)('containerd worker: pulled images in containerd (needs root, containerd, registry)', () => {
  let containerd: TestContainerd;
  let registry: TestRegistry;
  let work: string;
  beforeAll(async () => {
    [containerd, registry] = await Promise.all([startContainerd(), startRegistry()]);
    work = await mkdtemp(path.join(tmpdir(), 'kiln-ctrd-images-'));
  }, 30_000);
  afterAll(async () => {
    await Promise.all([containerd?.stop(), registry?.stop()]);
    await rm(work, { recursive: true, force: true });
  });

  it('writes manifest, config and layers into the content store, with an image record `ctr images ls` lists and a lease holding them', async () => {
    const pushed = await pushBusyboxImage(registry, work, 'kiln/busybox', 'v1');
    const root = path.join(work, 'worker');
    const worker = createContainerdWorker({ id: 'ctrd-images', root, sessions: createFakeSession().client, publish: createEventCollector().publish, containerdAddress: containerd.address });
    try {
      const ref = await solve(worker, image(pushed.ref));
      expect(ref).toBeDefined();
    } finally {
      await worker.close();
    }

    expect(ctr(containerd, 'images', 'ls', '-q')).toEqual([pushed.ref]);
    const [row] = ctr(containerd, 'images', 'ls').slice(1);
    expect(row).toContain(pushed.manifestDigest);

    const blobs = ctr(containerd, 'content', 'ls', '-q');
    expect(blobs).toEqual(expect.arrayContaining([pushed.manifestDigest, pushed.layer.digest]));
    expect(blobs).toHaveLength(3); // and the config
    // The manifest holds its config and layer for containerd's GC.
    const manifestRow = ctr(containerd, 'content', 'ls').find((l) => l.startsWith(pushed.manifestDigest));
    expect(manifestRow).toContain(`containerd.io/gc.ref.content.l.0=${pushed.layer.digest}`);
    expect(manifestRow).toContain('containerd.io/gc.ref.content.config=sha256:');
    // Every blob is written under the image's lease.
    const lease = imageLeaseId(pushed.ref);
    expect(ctr(containerd, 'leases', 'ls', '-q')).toContain(lease);
  });
});
