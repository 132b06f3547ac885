import path from 'node:path';
import { runSnapshotterContract } from '@kiln/snapshotter/testing';
import { findContainerd, startContainerd, type TestContainerd } from '@kiln/testkit';
import { createContainerdClient, type ContainerdClient } from './client.js';
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
});
