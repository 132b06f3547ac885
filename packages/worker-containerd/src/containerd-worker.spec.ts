import { execFileSync } from 'node:child_process';
import { accessSync, constants, copyFileSync, mkdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { findContainerd, startContainerd, type TestContainerd } from '@kiln/testkit';
import { ociSpec, serializeOciSpec } from '@kiln/worker';
import { runWorkerConformance } from '@kiln/worker/testing';
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
