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
    const lease = imageLeaseId(path.resolve(root), pushed.ref);
    expect(ctr(containerd, 'leases', 'ls', '-q')).toContain(lease);
  });

  it('removes an image from containerd once the worker holds no ref of it (kiln prune, the GC), also across a restart; its blobs go with it', async () => {
    const root = path.join(work, 'worker-prune');
    const make = () => createContainerdWorker({ id: 'ctrd-prune', root, sessions: createFakeSession().client, publish: createEventCollector().publish, containerdAddress: containerd.address });
    // Layers of their own (an extra dir each): no blob shared with another image of this file.
    const kept = await pushBusyboxImage(registry, work, 'kiln/prune', 'kept', { dirs: ['kept'] });
    const died = await pushBusyboxImage(registry, work, 'kiln/prune', 'died', { dirs: ['died'] });
    const blobsOf = (p: typeof kept) => [p.manifestDigest, p.layer.digest];
    const images = () => ctr(containerd, 'images', 'ls', '-q');
    const blobs = () => ctr(containerd, 'content', 'ls', '-q');

    let worker = make();
    try {
      // As the solver's cache holds a result: a persisted retention, the build's own reference released.
      const keptRef = (await solve(worker, image(kept.ref)))!;
      await worker.retain([keptRef], 'solver-cache');
      await worker.release([keptRef]);
      await solve(worker, image(died.ref)); // held by this process only
      expect(images()).toEqual(expect.arrayContaining([kept.ref, died.ref]));
      expect(blobs()).toEqual(expect.arrayContaining([...blobsOf(kept), ...blobsOf(died)]));
      await worker.close();

      // A restart: the ref of `died` died with the process, so its image goes; the retained one stays.
      worker = make();
      await worker.describe();
      for (let i = 0; i < 100 && images().includes(died.ref); i++) await new Promise((r) => setTimeout(r, 50));
      expect(images()).toContain(kept.ref);
      expect(images()).not.toContain(died.ref);
      expect(blobs()).not.toContain(died.manifestDigest);
      expect(blobs()).not.toContain(died.layer.digest);

      // The cache entry pruned: Drop answers once the image, its lease and its blobs are gone.
      await worker.drop([keptRef], 'solver-cache');
      expect(images()).not.toContain(kept.ref);
      expect(ctr(containerd, 'leases', 'ls', '-q')).not.toContain(imageLeaseId(path.resolve(root), kept.ref));
      for (const digest of blobsOf(kept)) expect(blobs()).not.toContain(digest);
    } finally {
      await worker.close();
    }
  });
});

