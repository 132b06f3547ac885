import { randomBytes } from 'node:crypto';
import { closeSync, constants, openSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { Socket } from 'node:net';
import path from 'node:path';
import { CanceledError, KilnError, silentLogger, type Logger } from '@kiln/common';
import { missingMountPoints, ociSpec, removeMountPointStubs, serializeOciSpec, type ExecIO, type ExecResult, type ExecSpec, type Executor } from '@kiln/worker';
import { hasCode, type ContainerdClient } from './client.js';
import type { TaskRootfs } from './containerd-snapshotter.js';
import { FifoPool, type FifoPair } from './fifo-pool.js';

/** The Any type URL containerd expects for an OCI runtime spec in JSON. */
export const OCI_SPEC_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/Spec';
/** Label on every container and lease this worker makes: which worker state owns it (reaping takes only these). */
export const OWNER_LABEL = 'kiln.owner';
/** OCI annotation the runc v2 shim groups containers by: tasks with one value share one shim process. */
const SHIM_GROUP_ANNOTATION = 'io.containerd.runc.v2.group';
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
  /**
   * Runs every task of this executor in one runc shim, kept alive by a
   * never-started holder task (see `shimGroup`), instead of a shim process
   * per task. Default true.
   */
  shareShim?: boolean;
  logger?: Logger;
}

/**
 * An Executor over containerd: each run is a container record (the OCI spec
 * from the shared `ociSpec`) and a task started through the runtime shim,
 * with stdout/stderr through FIFOs this executor creates. The step's root,
 * a containerd snapshot, is handed to the task as that snapshot's mounts
 * (`Tasks.Create` `rootfs`, mounted by the shim on the bundle's `rootfs`),
 * as BuildKit's containerd executor did; Kiln's host mount of it is
 * unmounted first. A run makes no lease: its container record and task
 * hold nothing containerd's GC could take. All tasks share one shim process
 * (see `shimGroup`). Cancellation is a SIGKILL to every process of the task.
 * Mount-point stubs the runtime creates in a writable rootfs are removed
 * afterwards, as for runc.
 */
export class ContainerdExecutor implements Executor {
  private readonly client: ContainerdClient;
  private readonly runtime: string;
  private readonly logger: Logger;
  private reaped: Promise<void> | undefined;
  private readonly fifos: FifoPool;
  /** The shim group of this executor's tasks (the holder task's id), made at the first run. */
  private shim: Promise<string | undefined> | undefined;
  /** Container records of finished runs still being deleted. */
  private readonly pending = new Set<Promise<void>>();

  constructor(private readonly opts: ContainerdExecutorOptions) {
    this.client = opts.client;
    this.fifos = new FifoPool(path.join(opts.stateDir, 'fifo'));
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
    await rm(path.join(this.opts.stateDir, 'shim-holder'), { recursive: true, force: true });
  }

  /**
   * The runc v2 shim groups tasks whose spec carries the same
   * `io.containerd.runc.v2.group` annotation into one shim process, which
   * exits once it has no task left (as Kubernetes pods share one). A holder
   * task, created and never started, keeps this executor's shim alive
   * between runs, so a run does not pay for starting a shim process and
   * stopping it. The holder's root is a directory with one empty executable
   * file (runc checks the process exists at create; it never runs). Made at
   * the first run; a failure only costs the sharing. Removed by `close`, or
   * by the next start's reaping (it carries the owner label).
   */
  private shimGroup(): Promise<string | undefined> {
    if (this.opts.shareShim === false) return Promise.resolve(undefined);
    this.shim ??= this.startShimHolder().catch((err: unknown) => {
      this.logger.warn({ err }, 'failed to start a shared shim: every task gets a shim of its own');
      return undefined;
    });
    return this.shim;
  }

  private async startShimHolder(): Promise<string> {
    const id = `kiln-shim-${randomBytes(8).toString('hex')}`;
    const rootfs = path.join(this.opts.stateDir, 'shim-holder', id);
    await mkdir(path.join(rootfs, 'proc'), { recursive: true, mode: 0o755 });
    await writeFile(path.join(rootfs, 'hold'), '', { mode: 0o755 });
    const spec = {
      ociVersion: '1.0.2',
      process: { terminal: false, user: { uid: 0, gid: 0 }, args: ['/hold'], env: [], cwd: '/', noNewPrivileges: true },
      root: { path: rootfs, readonly: true },
      hostname: 'kiln-shim',
      mounts: [{ destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] }],
      linux: { namespaces: ['pid', 'ipc', 'uts', 'mount', 'network'].map((type) => ({ type })) },
      annotations: { [SHIM_GROUP_ANNOTATION]: id },
    };
    await this.client.containers.create({
      container: { id, labels: { [OWNER_LABEL]: this.opts.owner }, runtime: { name: this.runtime }, spec: { typeUrl: OCI_SPEC_TYPE_URL, value: new TextEncoder().encode(JSON.stringify(spec)) } },
    });
    try {
      await this.client.tasks.create({ containerId: id, rootfs: [] });
    } catch (err) {
      await this.removeContainer(id);
      throw err;
    }
    return id;
  }

  /** Waits for finished runs' records to go, then removes the shim holder (its shim exits with it) and unused FIFOs. */
  async close(): Promise<void> {
    await Promise.all(this.pending);
    const holder = await this.shim;
    this.shim = Promise.resolve(undefined);
    if (holder) await this.removeContainer(holder);
    await this.fifos.close();
    await rm(path.join(this.opts.stateDir, 'shim-holder'), { recursive: true, force: true });
  }

  /**
   * Deletes the task (killing it first unless it `exited`), then the
   * container record: the record holds nothing of the step, so a finished
   * run does not wait for it (`close` and the next start's reaping do).
   */
  private async removeContainer(id: string, opts: { exited?: boolean } = {}): Promise<void> {
    if (!opts.exited) {
      await this.client.tasks.kill({ containerId: id, signal: SIGKILL, all: true }).catch(() => undefined);
      try {
        await this.client.tasks.wait({ containerId: id }, { timeoutMs: 10_000 });
      } catch {
        // no task, or its shim is gone
      }
    }
    await this.client.tasks.delete({ containerId: id }).catch((err: unknown) => {
      if (!hasCode(err, 'not_found')) this.logger.warn({ err, id }, 'failed to delete a task');
    });
    const deleted = this.client.containers.delete({ id }).then(
      () => undefined,
      (err: unknown) => {
        if (!hasCode(err, 'not_found')) this.logger.warn({ err, id }, 'failed to delete a container');
      },
    );
    if (!opts.exited) return deleted;
    this.pending.add(deleted);
    void deleted.finally(() => this.pending.delete(deleted));
  }

  async run(spec: ExecSpec, io: ExecIO = {}): Promise<ExecResult> {
    io.signal?.throwIfAborted();
    await this.reapStale();
    const id = `kiln-${randomBytes(8).toString('hex')}`;
    const labels = { [OWNER_LABEL]: this.opts.owner };
    // A root that is not the root of a containerd snapshot is handed over as a host path: an
    // ExecOp's root mount may carry a selector (LLB allows a subdirectory of its input as `/`),
    // and a snapshot's mounts cannot name a subdirectory.
    const root = this.opts.snapshots?.taskRootfs(spec.rootfs);
    // Read before the step runs: from the snapshot's layers when Kiln never mounted it, else on
    // Kiln's host mount (before that mount is detached).
    const stubs = await missingMountPoints(spec, root?.tree);
    let stdio: FifoReaders | undefined;
    let created = false;
    let exited = false;
    try {
      const oci = ociSpec(spec);
      // With rootfs mounts, the shim mounts them at <bundle>/rootfs: the spec names it relative to the bundle.
      if (root) oci['root'] = { path: 'rootfs', readonly: spec.readonlyRootfs };
      const group = await this.shimGroup();
      if (group) oci['annotations'] = { [SHIM_GROUP_ANNOTATION]: group };
      const config = serializeOciSpec(oci);
      // Independent of each other: the container record, the FIFOs, Kiln's host mount coming down.
      const [, fifos] = await Promise.all([
        this.client.containers
          .create({ container: { id, labels, runtime: { name: this.runtime }, spec: { typeUrl: OCI_SPEC_TYPE_URL, value: new TextEncoder().encode(config) } } })
          .then(() => {
            created = true;
          }),
        this.fifos.take(),
        root?.detachHost(),
      ]);
      stdio = openFifos(fifos, io);
      await this.client.tasks.create({ containerId: id, rootfs: root?.mounts ?? [], stdout: stdio.stdoutPath, stderr: stdio.stderrPath }).catch((err: unknown) => {
        throw runtimeError(spec, err);
      });
      // The shim holds the write ends now: drop ours so the streams end when it closes them.
      stdio.releaseWriters();
      const exitCode = await this.startAndWait(id, spec, io);
      exited = true;
      await stdio.ended();
      if (io.signal?.aborted) throw new CanceledError('process killed: the run was canceled');
      return { exitCode };
    } finally {
      stdio?.close();
      if (created) await this.removeContainer(id, { exited });
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
 * Reads a run's stdout and stderr FIFOs into `io`. Each FIFO is also
 * opened read-write and kept until the shim has its writer: a non-blocking
 * reader with no writer would see end-of-file at once, and a blocking open
 * would hold a thread of Node's pool until the shim comes. `close` removes
 * the FIFOs.
 */
function openFifos(fifos: FifoPair, io: ExecIO): FifoReaders {
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
  read(fifos.stdout, io.stdout);
  read(fifos.stderr, io.stderr);
  const releaseWriters = () => {
    for (const fd of holders.splice(0)) closeSync(fd);
  };
  return {
    stdoutPath: fifos.stdout,
    stderrPath: fifos.stderr,
    releaseWriters,
    ended: async () => {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([Promise.all(ends), new Promise((r) => (timer = setTimeout(r, 5000)))]);
      clearTimeout(timer);
    },
    close: () => {
      releaseWriters();
      for (const s of sockets) s.destroy();
      void fifos.dispose().catch(() => undefined);
    },
  };
}

export function createContainerdExecutor(opts: ContainerdExecutorOptions): ContainerdExecutor {
  return new ContainerdExecutor(opts);
}
