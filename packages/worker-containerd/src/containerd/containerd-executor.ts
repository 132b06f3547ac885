import { randomBytes } from 'node:crypto';
import { closeSync, constants, openSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { Socket } from 'node:net';
import path from 'node:path';
import { CanceledError, execLight, KilnError, silentLogger, type Logger } from '@kiln/common';
import { missingMountPoints, ociSpec, removeMountPointStubs, serializeOciSpec, type ExecIO, type ExecResult, type ExecSpec, type Executor } from '@kiln/worker';
import { hasCode, type ContainerdClient } from './client.js';
import type { TaskRootfs } from './containerd-snapshotter.js';

/** The Any type URL containerd expects for an OCI runtime spec in JSON. */
export const OCI_SPEC_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/Spec';
/** Label on every container and lease this worker makes: which worker state owns it (reaping takes only these). */
export const OWNER_LABEL = 'kiln.owner';
/** Lease label containerd's GC reads: a lease left by a killed worker expires by itself. */
const LEASE_EXPIRE_LABEL = 'containerd.io/gc.expire';
const LEASE_TTL_MS = 24 * 3600_000;
const SIGKILL = 9;

export interface ContainerdExecutorOptions {
  client: ContainerdClient;
  /** Directory for the per-run stdio FIFOs; created if absent. */
  stateDir: string;
  /** Value of the `kiln.owner` label: this worker's state (its root), so workers sharing one containerd reap only their own objects. */
  owner: string;
  /** containerd runtime of the tasks. Default "io.containerd.runc.v2" (the runc shim v2). */
  runtime?: string;
  /**
   * The containerd snapshot whose tree is at a host path (the worker's
   * `ContainerdSnapshotter.taskRootfs`): a step root found there becomes
   * the task's rootfs mounts, mounted by containerd's shim.
   */
  snapshots?: { taskRootfs(hostPath: string): TaskRootfs | undefined };
  logger?: Logger;
}

/**
 * An Executor over containerd: each run is a container record (the OCI spec
 * from the shared `ociSpec`) and a task started through the runtime shim,
 * with stdout/stderr through FIFOs this executor creates. The step's root,
 * a containerd snapshot, is handed to the task as that snapshot's mounts
 * (`Tasks.Create` `rootfs`, mounted by the shim on the bundle's `rootfs`),
 * as BuildKit's containerd executor did; Kiln's host mount of it is
 * unmounted first. Everything a run makes in containerd is
 * created under a lease of its own, deleted with it. Cancellation is a
 * SIGKILL to every process of the task. Mount-point stubs the runtime
 * creates in a writable rootfs are removed afterwards, as for runc.
 */
export class ContainerdExecutor implements Executor {
  private readonly client: ContainerdClient;
  private readonly runtime: string;
  private readonly logger: Logger;
  private reaped: Promise<void> | undefined;

  constructor(private readonly opts: ContainerdExecutorOptions) {
    this.client = opts.client;
    this.runtime = opts.runtime ?? 'io.containerd.runc.v2';
    this.logger = (opts.logger ?? silentLogger()).child({ component: 'containerd-executor' });
  }

  /**
   * Removes what a killed worker on the same state left in containerd: its
   * tasks (killed, then deleted), containers and leases, found by the
   * `kiln.owner` label; and the FIFO dir. Once; also before the first run.
   */
  reapStale(): Promise<void> {
    this.reaped ??= this.reap().catch((err: unknown) => this.logger.warn({ err }, 'failed to reap what an earlier worker left in containerd'));
    return this.reaped;
  }

  private async reap(): Promise<void> {
    const ns = this.client.namespace;
    await this.client.namespaces.create({ namespace: { name: ns, labels: {} } }).catch((err: unknown) => {
      if (!hasCode(err, 'already_exists')) throw err;
    });
    const filter = `labels."${OWNER_LABEL}"==${JSON.stringify(this.opts.owner)}`;
    const { containers } = await this.client.containers.list({ filters: [filter] });
    for (const c of containers) await this.removeContainer(c.id);
    const { leases } = await this.client.leases.list({ filters: [filter] });
    for (const l of leases) await this.client.leases.delete({ id: l.id }).catch((err: unknown) => this.logger.warn({ err, lease: l.id }, 'failed to delete a stale lease'));
    if (containers.length + leases.length > 0) this.logger.info({ containers: containers.length, leases: leases.length }, 'removed containers and leases left by an earlier worker');
    await rm(path.join(this.opts.stateDir, 'fifo'), { recursive: true, force: true });
  }

  /** Kills and deletes the task (if any), then the container record. */
  private async removeContainer(id: string): Promise<void> {
    await this.client.tasks.kill({ containerId: id, signal: SIGKILL, all: true }).catch(() => undefined);
    try {
      await this.client.tasks.wait({ containerId: id }, { timeoutMs: 10_000 });
    } catch {
      // no task, or its shim is gone
    }
    await this.client.tasks.delete({ containerId: id }).catch((err: unknown) => {
      if (!hasCode(err, 'not_found')) this.logger.warn({ err, id }, 'failed to delete a task');
    });
    await this.client.containers.delete({ id }).catch((err: unknown) => {
      if (!hasCode(err, 'not_found')) this.logger.warn({ err, id }, 'failed to delete a container');
    });
  }

  async run(spec: ExecSpec, io: ExecIO = {}): Promise<ExecResult> {
    io.signal?.throwIfAborted();
    await this.reapStale();
    const id = `kiln-${randomBytes(8).toString('hex')}`;
    const labels = { [OWNER_LABEL]: this.opts.owner };
    const fifoDir = path.join(this.opts.stateDir, 'fifo', id);
    // Read on Kiln's host mount, before the step runs (and before that mount is detached).
    const stubs = await missingMountPoints(spec);
    // A root that is not the root of a containerd snapshot is handed over as a host path: an
    // ExecOp's root mount may carry a selector (LLB allows a subdirectory of its input as `/`),
    // and a snapshot's mounts cannot name a subdirectory.
    const root = this.opts.snapshots?.taskRootfs(spec.rootfs);
    const lease = (
      await this.client.leases.create({ id, labels: { ...labels, [LEASE_EXPIRE_LABEL]: new Date(Date.now() + LEASE_TTL_MS).toISOString() } })
    ).lease?.id ?? id;
    let stdio: FifoReaders | undefined;
    let created = false;
    try {
      await mkdir(fifoDir, { recursive: true, mode: 0o700 });
      stdio = await openFifos(fifoDir, io);
      const oci = ociSpec(spec);
      // With rootfs mounts, the shim mounts them at <bundle>/rootfs: the spec names it relative to the bundle.
      if (root) oci['root'] = { path: 'rootfs', readonly: spec.readonlyRootfs };
      const config = serializeOciSpec(oci);
      await this.client.containers.create(
        {
          container: {
            id,
            labels,
            runtime: { name: this.runtime },
            spec: { typeUrl: OCI_SPEC_TYPE_URL, value: new TextEncoder().encode(config) },
          },
        },
        { lease },
      );
      created = true;
      await root?.detachHost();
      await this.client.tasks
        .create({ containerId: id, rootfs: root?.mounts ?? [], stdout: stdio.stdoutPath, stderr: stdio.stderrPath }, { lease })
        .catch((err: unknown) => {
          throw runtimeError(spec, err);
        });
      // The shim holds the write ends now: drop ours so the streams end when it closes them.
      stdio.releaseWriters();
      const exitCode = await this.startAndWait(id, spec, io);
      await stdio.ended();
      if (io.signal?.aborted) throw new CanceledError('process killed: the run was canceled');
      return { exitCode };
    } finally {
      stdio?.close();
      if (created) await this.removeContainer(id);
      await this.client.leases.delete({ id: lease }).catch((err: unknown) => this.logger.warn({ err, lease }, 'failed to delete a lease'));
      await rm(fifoDir, { recursive: true, force: true });
      // The task is deleted, so the shim's mount is gone: stubs are removed where the step's writes are
      // (the snapshot's own dir), each walked by fd without following a symlink the step planted.
      removeMountPointStubs(root?.stubRoot ?? spec.rootfs, stubs, this.logger);
    }
  }

  /** Starts the task and waits for its exit status; an abort kills every process of it. */
  private async startAndWait(id: string, spec: ExecSpec, io: ExecIO): Promise<number> {
    let exited = false;
    const onAbort = async () => {
      for (let attempt = 0; !exited; attempt++) {
        try {
          await this.client.tasks.kill({ containerId: id, signal: SIGKILL, all: true });
        } catch (err) {
          if (attempt === 100) this.logger.warn({ err, id }, 'killing the task keeps failing');
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    const abortListener = () => void onAbort();
    try {
      // Wait is registered before Start, so even an instant exit is seen.
      const waited = this.client.tasks.wait({ containerId: id });
      waited.catch(() => undefined);
      await this.client.tasks.start({ containerId: id }).catch((err: unknown) => {
        throw runtimeError(spec, err);
      });
      io.signal?.addEventListener('abort', abortListener, { once: true });
      if (io.signal?.aborted) abortListener();
      return (await waited).exitStatus;
    } finally {
      exited = true;
      io.signal?.removeEventListener('abort', abortListener);
    }
  }
}

/** A failure of the runtime to create or start the process (e.g. no such executable), as the runc executor reports it. */
function runtimeError(spec: ExecSpec, err: unknown): KilnError {
  const why = err instanceof KilnError ? err.message.replace(/^containerd \S+ failed: /, '') : String(err);
  return new KilnError('internal', `failed to run "${spec.process.args.join(' ')}": ${why}`, {}, { cause: err });
}

interface FifoReaders {
  stdoutPath: string;
  stderrPath: string;
  /** Closes the write ends held while the shim opens the FIFOs. */
  releaseWriters(): void;
  /** Resolves when both streams have ended (the shim closed them), or after 5 s. */
  ended(): Promise<void>;
  close(): void;
}

/**
 * Makes stdout and stderr FIFOs and reads them into `io`. Each FIFO is also
 * opened read-write and kept until the shim has its writer: a non-blocking
 * reader with no writer would see end-of-file at once, and a blocking open
 * would hold a thread of Node's pool until the shim comes.
 */
async function openFifos(dir: string, io: ExecIO): Promise<FifoReaders> {
  const stdoutPath = path.join(dir, 'stdout');
  const stderrPath = path.join(dir, 'stderr');
  await execLight('mkfifo', ['-m', '0600', stdoutPath, stderrPath]);
  const holders: number[] = [];
  const sockets: Socket[] = [];
  const ends: Promise<void>[] = [];
  const read = (p: string, sink: ((chunk: Uint8Array) => void) | undefined) => {
    holders.push(openSync(p, constants.O_RDWR));
    const socket = new Socket({ fd: openSync(p, constants.O_RDONLY | constants.O_NONBLOCK), readable: true, writable: false });
    sockets.push(socket);
    socket.on('data', (chunk: Buffer) => sink?.(chunk));
    ends.push(
      new Promise<void>((resolve) => {
        socket.once('end', resolve);
        socket.once('close', resolve);
        socket.once('error', () => resolve());
      }),
    );
  };
  read(stdoutPath, io.stdout);
  read(stderrPath, io.stderr);
  const releaseWriters = () => {
    for (const fd of holders.splice(0)) closeSync(fd);
  };
  return {
    stdoutPath,
    stderrPath,
    releaseWriters,
    ended: async () => {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([Promise.all(ends), new Promise((r) => (timer = setTimeout(r, 5000)))]);
      clearTimeout(timer);
    },
    close: () => {
      releaseWriters();
      for (const s of sockets) s.destroy();
    },
  };
}

export function createContainerdExecutor(opts: ContainerdExecutorOptions): ContainerdExecutor {
  return new ContainerdExecutor(opts);
}
