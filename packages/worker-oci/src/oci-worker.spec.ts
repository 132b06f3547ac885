import { execFileSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { existsSync, readdirSync, symlinkSync, copyFileSync, chmodSync, mkdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { FileChain, local, State } from '@kiln/llb';
import { mountsBelow } from '@kiln/snapshotter/testing';
import { createFakeSession, execOp, readTar, runWorkerConformance, solve } from '@kiln/worker/testing';
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

describe.skipIf(!canRunContainers())('oci worker leaves nothing behind (needs root, runc, /bin/busybox)', () => {
  /** Mounts under root, runc containers, bundles, per-run files and secret tmpfs dirs still present. */
  function leftovers(root: string): string[] {
    const out = mountsBelow(root).map((m) => `mount ${m}`);
    const state = path.join(root, 'runc', 'state');
    if (existsSync(state)) {
      for (const id of execFileSync('runc', ['--root', state, 'list', '-q']).toString().split('\n').filter(Boolean)) out.push(`container ${id}`);
    }
    for (const dir of [path.join(root, 'runc', 'bundles'), path.join(root, 'exec', 'run'), path.join(root, 'exec', 'secrets')]) {
      if (existsSync(dir)) for (const name of readdirSync(dir)) out.push(`temp ${path.join(dir, name)}`);
    }
    return out;
  }

  it('after a successful, a failed and a canceled exec step (with secret, tmpfs and hosts mounts)', async () => {
    const root = await mkdtemp(path.join(tmpdir(), 'kiln-oci-leaks-'));
    const rootfs = path.join(root, 'rootfs');
    mkdirSync(path.join(rootfs, 'bin'), { recursive: true });
    copyFileSync('/bin/busybox', path.join(rootfs, 'bin', 'busybox'));
    chmodSync(path.join(rootfs, 'bin', 'busybox'), 0o755);
    for (const a of ['sh', 'sleep', 'cat']) symlinkSync('busybox', path.join(rootfs, 'bin', a));
    const session = createFakeSession({ rootfs: { dir: rootfs } });
    session.secrets.set('tok', new TextEncoder().encode('s'));
    const workerRoot = path.join(root, 'worker');
    const w = createOciWorker({ id: 'oci-leaks', root: workerRoot, sessions: session.client, publish: async () => undefined });
    const step = (cmd: string) =>
      execOp(local('rootfs'), ['/bin/sh', '-c', cmd], {
        mounts: [
          { dest: '/run/secrets/tok', type: 'secret', secret: { id: 'tok' } },
          { dest: '/scratch', type: 'tmpfs' },
        ],
      });
    try {
      const ok = await solve(w, step('cat /run/secrets/tok > /scratch/x; echo done > /ok'));
      expect(ok).toBeTruthy();
      expect(leftovers(workerRoot)).toEqual([]);
      await expect(solve(w, step('exit 3'))).rejects.toMatchObject({ code: 'vertex' });
      expect(leftovers(workerRoot)).toEqual([]);
      const ac = new AbortController();
      const timer = setTimeout(() => ac.abort(), 500);
      await expect(solve(w, step('sleep 30'), { signal: ac.signal })).rejects.toMatchObject({ code: 'canceled' });
      clearTimeout(timer);
      expect(leftovers(workerRoot)).toEqual([]);
    } finally {
      await w.close();
      expect(mountsBelow(root)).toEqual([]);
      await rm(root, { recursive: true, force: true });
    }
  });

  it('after close() while an exec step runs: the step is canceled, its container killed', async () => {
    const root = await mkdtemp(path.join(tmpdir(), 'kiln-oci-close-'));
    const rootfs = path.join(root, 'rootfs');
    mkdirSync(path.join(rootfs, 'bin'), { recursive: true });
    copyFileSync('/bin/busybox', path.join(rootfs, 'bin', 'busybox'));
    chmodSync(path.join(rootfs, 'bin', 'busybox'), 0o755);
    const session = createFakeSession({ rootfs: { dir: rootfs } });
    const workerRoot = path.join(root, 'worker');
    const w = createOciWorker({ id: 'oci-close', root: workerRoot, sessions: session.client, publish: async () => undefined });
    const running = () => execFileSync('runc', ['--root', path.join(workerRoot, 'runc', 'state'), 'list', '-q']).toString().trim();
    try {
      const step = solve(w, execOp(local('rootfs'), ['/bin/busybox', 'sleep', '30']));
      step.catch(() => undefined);
      for (let i = 0; i < 200 && !running(); i++) await new Promise((r) => setTimeout(r, 50));
      expect(running()).not.toBe('');
      const started = Date.now();
      await w.close();
      expect(Date.now() - started).toBeLessThan(10_000);
      await expect(step).rejects.toMatchObject({ code: 'canceled' });
      expect(leftovers(workerRoot)).toEqual([]);
      expect(mountsBelow(root)).toEqual([]);
    } finally {
      await w.close();
      await rm(root, { recursive: true, force: true });
    }
  });
});
