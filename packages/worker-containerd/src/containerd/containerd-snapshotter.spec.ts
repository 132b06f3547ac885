import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { runSnapshotterContract } from '@kiln/snapshotter/testing';
import { findContainerd, startContainerd, type TestContainerd } from '@kiln/testkit';
import { createContainerdClient, type ContainerdClient } from './client.js';
import { createContainerdExecutor } from './containerd-executor.js';
import { createContainerdSnapshotter } from './containerd-snapshotter.js';

const available = process.getuid?.() === 0 && !!findContainerd();

describe.skipIf(!available)('containerd snapshotter (needs root and containerd)', () => {
  let containerd: TestContainerd;
  let client: ContainerdClient;
  beforeAll(async () => {
    containerd = await startContainerd();
    client = createContainerdClient({ address: containerd.address });
  }, 30_000);
  afterAll(async () => {
    client?.close();
    await containerd?.stop();
  });

  // Each test's root is the owner, so reopening on the same root finds the same snapshots.
  runSnapshotterContract('containerd overlayfs', (root) => createContainerdSnapshotter({ client, owner: root, mountDir: path.join(root, 'mnt') }));

  it('keeps committed snapshots (and their leases) when the executor on the same root reaps its runs at start', async () => {
    const root = await mkdtemp(path.join(tmpdir(), 'kiln-ctrd-snap-reap-'));
    try {
      const s1 = createContainerdSnapshotter({ client, owner: root, mountDir: path.join(root, 'mnt') });
      const a = await s1.prepare('a');
      await writeFile(path.join(a.path, 'f'), 'kept');
      const id = await s1.commit('a');
      await s1.close();
      await createContainerdExecutor({ client, stateDir: path.join(root, 'containerd'), owner: root }).reapStale();
      // A GC after the reaping would take a snapshot no lease holds.
      await client.leases.create({ id: 'gc-now' });
      await client.leases.delete({ id: 'gc-now', sync: true });
      const s2 = createContainerdSnapshotter({ client, owner: root, mountDir: path.join(root, 'mnt') });
      const v = await s2.view(id);
      expect(await readFile(path.join(v.path, 'f'), 'utf8')).toBe('kept');
      await v.release();
      await s2.close();
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
