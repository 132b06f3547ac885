import { execFileSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { FileChain, State } from '@kiln/llb';
import { mountsBelow } from '@kiln/snapshotter/testing';
import { readTar, runWorkerConformance, solve } from '@kiln/worker/testing';
import { createOciWorker } from './oci-worker.js';

/** runc runs containers here: we are root, runc is installed and the host has a static busybox for the rootfs. */
function canRunContainers(): boolean {
  try {
    if (process.getuid?.() !== 0) return false;
    accessSync('/bin/busybox', constants.X_OK);
    execFileSync('runc', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

runWorkerConformance(
  'oci (runc)',
  (deps) => createOciWorker({ id: 'oci-test', ...deps }),
  { exec: canRunContainers() ? 'run' : 'skip' },
);

describe('oci worker snapshots', () => {
  const noSessions = {
    fetchFiles() {
      throw new Error('no session in this test');
    },
  };

  it('runs on overlayfs by default, leaves no mount behind at close, and can be told to use native snapshots', async () => {
    const root = await mkdtemp(path.join(tmpdir(), 'kiln-oci-snap-'));
    try {
      const w = createOciWorker({ id: 'oci-ovl', root, sessions: noSessions, publish: async () => undefined });
      expect((await w.describe()).labels['kiln.snapshotter']).toBe('overlayfs');
      const data = new TextEncoder().encode('x');
      const base = FileChain.start().mkfile('/a', 0o644, data).apply(State.scratch());
      const ref = (await solve(w, FileChain.start().mkfile('/b', 0o644, data).apply(base)))!;
      expect((await readTar(w.exportRef(ref))).map((e) => e.name)).toEqual(['a', 'b']);
      await w.release([ref]);
      await w.close();
      expect(mountsBelow(root)).toEqual([]);
      const native = createOciWorker({ id: 'oci-native', root, sessions: noSessions, publish: async () => undefined, snapshotter: 'native' });
      expect((await native.describe()).labels['kiln.snapshotter']).toBe('directory');
      await native.close();
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
