import { execFileSync } from 'node:child_process';
import { accessSync, constants, copyFileSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { findContainerd, startContainerd, type TestContainerd } from '@kiln/testkit';
import { ociSpec, serializeOciSpec } from '@kiln/worker';
import { local } from '@kiln/llb';
import { createEventCollector, createFakeSession, execOp, runWorkerConformance, solve } from '@kiln/worker/testing';
import { createContainerdClient } from './containerd/client.js';
import { OCI_SPEC_TYPE_URL, OWNER_LABEL } from './containerd/containerd-executor.js';
import { createContainerdWorker } from './containerd-worker.js';

/** containerd runs tasks here: we are root, containerd, its runc shim and runc are installed, and the host has a static busybox for the rootfs. */
function canRunContainerd(): boolean {
  try {
    if (process.getuid?.() !== 0 || !findContainerd()) return false;
    accessSync('/bin/busybox', constants.X_OK);
    execFileSync('containerd-shim-runc-v2', ['-v'], { stdio: 'ignore' });
    execFileSync('runc', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const available = canRunContainerd();
let containerd: TestContainerd | undefined;
if (available) {
  beforeAll(async () => {
    containerd = await startContainerd();
  }, 30_000);
  afterAll(async () => {
    await containerd?.stop();
  });
}

runWorkerConformance(
  'containerd',
  (deps) => createContainerdWorker({ id: 'containerd-test', ...deps, containerdAddress: containerd?.address }),
  { exec: available ? 'run' : 'skip' },
);

describe.skipIf(!available)('containerd worker crash reaping (needs root, containerd, busybox)', () => {
  it('removes the tasks, containers and leases a killed worker on its root left, and nothing of another owner', async () => {
    const root = await mkdtemp(path.join(tmpdir(), 'kiln-ctrd-reap-'));
    const client = createContainerdClient({ address: containerd!.address });
    try {
      const rootfs = path.join(root, 'rootfs');
      mkdirSync(path.join(rootfs, 'bin'), { recursive: true });
      copyFileSync('/bin/busybox', path.join(rootfs, 'bin/busybox'));
      const spec = (args: string[]) =>
        new TextEncoder().encode(
          serializeOciSpec(
            ociSpec({
              rootfs,
              readonlyRootfs: true,
              mounts: [],
              process: { args, env: ['PATH=/bin'], cwd: '/', user: { uid: 0, gid: 0, additionalGids: [] } },
              network: 'none',
              hostname: 'stale',
              security: 'sandbox',
              rlimits: [],
            }),
          ),
        );
      const make = async (id: string, owner: string) => {
        await client.leases.create({ id, labels: { [OWNER_LABEL]: owner } });
        await client.containers.create(
          { container: { id, labels: { [OWNER_LABEL]: owner }, runtime: { name: 'io.containerd.runc.v2' }, spec: { typeUrl: OCI_SPEC_TYPE_URL, value: spec(['/bin/busybox', 'sleep', '1000']) } } },
          { lease: id },
        );
        const { pid } = await client.tasks.create({ containerId: id }, { lease: id });
        await client.tasks.start({ containerId: id });
        return pid;
      };
      const stalePid = await make('stale-1', path.resolve(root));
      await make('other-1', '/somewhere/else');
      expect(isAlive(stalePid)).toBe(true);

      const worker = createContainerdWorker({ id: 'reaper', root, sessions: { fetchFiles: () => Promise.reject(new Error('no session')) } as never, publish: async () => undefined, containerdAddress: containerd!.address });
      await worker.close(); // close waits for the reaping started at creation

      const ids = async (filter: string) => ({
        containers: (await client.containers.list({ filters: [filter] })).containers.map((c) => c.id),
        leases: (await client.leases.list({ filters: [filter] })).leases.map((l) => l.id),
      });
      expect(await ids(`labels."${OWNER_LABEL}"==${JSON.stringify(path.resolve(root))}`)).toEqual({ containers: [], leases: [] });
      expect(await ids(`labels."${OWNER_LABEL}"=="/somewhere/else"`)).toEqual({ containers: ['other-1'], leases: ['other-1'] });
      expect(isAlive(stalePid)).toBe(false);
    } finally {
      await client.tasks.kill({ containerId: 'other-1', signal: 9, all: true }).catch(() => undefined);
      await client.tasks.wait({ containerId: 'other-1' }).catch(() => undefined);
      await client.tasks.delete({ containerId: 'other-1' }).catch(() => undefined);
      await client.containers.delete({ id: 'other-1' }).catch(() => undefined);
      await client.leases.delete({ id: 'other-1' }).catch(() => undefined);
      client.close();
      await rm(root, { recursive: true, force: true });
    }
  });
});

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe.skipIf(!available)('containerd worker exec: a step root that is a snapshot runs from its containerd mounts (needs root, containerd, busybox)', () => {
  /** `ctr` (containerd's own CLI) against the test's containerd, in Kiln's namespace. */
  const ctr = (...args: string[]) => execFileSync('ctr', ['--address', containerd!.address, '--namespace', 'kiln', ...args], { encoding: 'utf8' });
  const mountPoints = () =>
    readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => ({ at: l.split(' ')[4]!, fs: l.split(' - ')[1] ?? '' }));

  /** Pids of the runc shims serving the test's containerd. */
  const shims = () =>
    readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .filter((p) => {
        try {
          const argv = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
          return argv[0]!.endsWith('containerd-shim-runc-v2') && argv.includes(containerd!.address);
        } catch {
          return false; // gone meanwhile
        }
      });

  it('hands the task the overlay containerd returned (mounted by the shim at the bundle, Kiln not mounting it); a root with a selector runs from its host path; every task runs in one shim', async () => {
    const base = await mkdtemp(path.join(tmpdir(), 'kiln-ctrd-rootfs-'));
    const ctxDir = path.join(base, 'ctx');
    mkdirSync(path.join(ctxDir, 'bin'), { recursive: true });
    mkdirSync(path.join(ctxDir, 'sub/bin'), { recursive: true });
    copyFileSync('/bin/busybox', path.join(ctxDir, 'bin/busybox'));
    copyFileSync('/bin/busybox', path.join(ctxDir, 'sub/bin/busybox'));
    const root = path.join(base, 'worker');
    const session = createFakeSession({ rootfs: { dir: ctxDir } });
    const worker = createContainerdWorker({ id: 'task-rootfs', root, sessions: session.client, publish: createEventCollector().publish, containerdAddress: containerd!.address });
    try {
      const running = solve(worker, execOp(local('rootfs'), ['/bin/busybox', 'sh', '-c', 'echo hi > /out; /bin/busybox sleep 2']));
      running.catch(() => undefined); // awaited below; a failed expectation first must not leave it unhandled
      let id = '';
      for (let i = 0; i < 200 && !id; i++) {
        // The shared shim's holder task (created, never started) is not the step's.
        id = ctr('tasks', 'ls', '-q').split('\n').find((t) => t && !t.startsWith('kiln-shim-')) ?? '';
        if (!id) await new Promise((r) => setTimeout(r, 50));
      }
      expect(id).toMatch(/^kiln-/);
      const shimsDuring = shims();
      expect(shimsDuring).toHaveLength(1);
      const info = JSON.parse(ctr('containers', 'info', id)) as { Spec: { root: { path: string } } };
      expect(info.Spec.root.path).toBe('rootfs');
      const during = mountPoints();
      // The shim mounted the snapshot's overlay (containerd's dirs) on the task's bundle ...
      const bundle = during.find((m) => m.at.endsWith(`/${id}/rootfs`));
      expect(bundle?.fs).toMatch(/^overlay overlay .*upperdir=[^,]*\/io\.containerd\.snapshotter\.v1\.overlayfs\/snapshots\/\d+\/fs,/);
      // ... and Kiln holds no mount of it (nor of anything else) under its root: one overlay per upper dir.
      expect(during.filter((m) => m.at.startsWith(root))).toEqual([]);
      const ref = await running;
      expect(new TextDecoder().decode(await worker.refFiles(ref!).read('/out', 0, 100))).toBe('hi\n');

      // The fallback: `/` is a subdirectory of its input, which a snapshot's mounts cannot name.
      const sub = await solve(worker, execOp(local('rootfs'), ['/bin/busybox', 'sh', '-c', 'echo sub > /out'], { rootSelector: '/sub' }));
      expect(new TextDecoder().decode(await worker.refFiles(sub!).read('/sub/out', 0, 100))).toBe('sub\n');
      await expect(worker.refFiles(sub!).stat('/out')).rejects.toThrow();
      // The second task ran in the same shim, which outlives both (its holder task keeps it) until the worker closes.
      expect(shims()).toEqual(shimsDuring);
      await worker.close();
      for (let i = 0; i < 100 && shims().length > 0; i++) await new Promise((r) => setTimeout(r, 50));
      expect(shims()).toEqual([]);
      expect(ctr('containers', 'ls', '-q').trim()).toBe('');
    } finally {
      await worker.close();
      await rm(base, { recursive: true, force: true });
    }
  });
});
