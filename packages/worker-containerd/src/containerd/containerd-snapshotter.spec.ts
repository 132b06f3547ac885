import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { runSnapshotterContract } from '@kiln/snapshotter/testing';
import { findContainerd, startContainerd, type TestContainerd } from '@kiln/testkit';
import { createContainerdClient, type ContainerdClient } from './client.js';
import { createContainerdExecutor } from './containerd-executor.js';
import { createContainerdSnapshotter } from './containerd-snapshotter.js';
import { mountPointsUnder } from './snapshot-mounts.js';

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

  it('leaves a root prepared with deferMount unmounted, reads it from its layers, and mounts it on demand', async () => {
    const root = await mkdtemp(path.join(tmpdir(), 'kiln-ctrd-snap-defer-'));
    const mountDir = path.join(root, 'mnt');
    const s = createContainerdSnapshotter({ client, owner: root, mountDir });
    try {
      const base = await s.prepare('base');
      await mkdir(path.join(base.path, 'etc'));
      await writeFile(path.join(base.path, 'etc/passwd'), 'app:x:1000:1000::/home/app:/bin/sh\n');
      const parent = await s.commit('base');
      const step = await s.prepare('step', parent, { deferMount: true });
      expect(step.unmounted).toBeDefined();
      expect(mountPointsUnder(mountDir)).toEqual([]);
      expect((await step.unmounted!.readFile('/etc/passwd')).toString()).toContain('app:x:1000');
      expect(await step.unmounted!.lookup('/etc')).toEqual({ path: '/etc', exists: true, isDirectory: true });
      expect(await step.unmounted!.lookup('/work')).toEqual({ path: '/work', exists: false, isDirectory: false });
      expect(mountPointsUnder(mountDir)).toEqual([]);
      // A write on the host needs the mount: after it, the tree is the usual host mount, and commit takes what was written.
      await step.unmounted!.mount();
      expect(mountPointsUnder(mountDir)).toEqual([step.path]);
      await writeFile(path.join(step.path, 'etc/motd'), 'hi');
      const id = await s.commit('step');
      expect(mountPointsUnder(mountDir)).toEqual([]);
      const v = await s.view(id);
      expect(await readFile(path.join(v.path, 'etc/motd'), 'utf8')).toBe('hi');
      await v.release();
      // Without a parent the tree is a plain dir (nothing to mount): deferMount changes nothing.
      const first = await s.prepare('first', undefined, { deferMount: true });
      expect(first.unmounted).toBeUndefined();
      await s.remove('first');
    } finally {
      await s.close();
      await rm(root, { recursive: true, force: true });
    }
  });
});
