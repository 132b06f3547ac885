import { llb } from '@kiln/api';
import { CanceledError, InvalidArgumentError, KilnError, UnimplementedError, type Logger } from '@kiln/common';
import { cleanRootPath, resolveInRoot, type SnapshotView, type UnmountedTree } from '@kiln/snapshotter';
import type { ExecMount, Executor } from '../executor.js';
import { mkdirAllInRoot } from '../fs/fs-util.js';
import { resolveExecUser } from '../fs/users.js';
import { checkEntitlements } from '../exec/entitlements.js';
import { resolveCacheSource, type CacheLease, type CacheMounts } from '../exec/cache-mounts.js';
import type { Limiter } from '../exec/limiter.js';
import { SecretDir } from '../exec/secret-dir.js';
import { hostsFile, RunFiles } from '../exec/run-files.js';
import { SshAgentSocket, type SshForwarder } from '../exec/ssh-agent-socket.js';
import { OutputTail } from '../exec/output-tail.js';
import type { NetworkProvider, StepNetwork } from '../network/step-network.js';
import type { Entitlement, WorkerSession } from '../worker.js';
import { OpFailure } from './op-failure.js';
import { newSnapshotKey, type OpContext, type OpResult } from './op-context.js';

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** What an exec op needs from the worker besides the op context. */
export interface ExecEnv {
  executor: Executor;
  /** Bounds the processes running at once (WorkerOptions.maxParallelExecs). */
  limiter: Limiter;
  /** Entitlements the build was granted (RunRequest.entitlements). */
  granted: readonly string[];
  /** Entitlements the daemon permits (WorkerOptions.allowedEntitlements). */
  allowed: ReadonlySet<Entitlement>;
  /** RunRequest.no_cache: cache mounts start empty (seeded from their input only) at this build's first use. */
  noCache?: boolean;
  /** The build the step belongs to (RunRequest.build_id): a `--no-cache` build empties each cache once. */
  buildId: string;
  /** The build's session (secrets, SSH agents) and where exec state lives. */
  sessions: WorkerSession;
  sessionId: string;
  stateDir: string;
  cacheMounts: CacheMounts;
  /** Networks of steps (WorkerOptions.network). */
  network: NetworkProvider;
  logger: Logger;
}

/** Ulimit names Docker accepts (`--ulimit`, `RUN --ulimit`). */
const ULIMITS = new Set(['as', 'core', 'cpu', 'data', 'fsize', 'locks', 'memlock', 'msgqueue', 'nice', 'nofile', 'nproc', 'rss', 'rtprio', 'rttime', 'sigpending', 'stack']);

/**
 * Runs an ExecOp: checks its entitlements, prepares a writable snapshot for
 * the root mount and for every mount that produces an output, opens
 * read-only views for the other input mounts, runs the process through the
 * Executor (output streamed to the vertex's log as it comes) and commits the
 * output mounts when it exits with a valid code.
 */
export async function runExecOp(ctx: OpContext, exec: llb.ExecOp, env: ExecEnv): Promise<OpResult> {
  const meta = exec.meta;
  if (!meta || meta.args.length === 0) throw new InvalidArgumentError('exec op has no command', 'op');
  checkSupported(exec);
  checkEntitlements(exec, env.granted, env.allowed);
  const rlimits = meta.ulimits.map((u) => {
    if (!ULIMITS.has(u.name)) throw new InvalidArgumentError(`unknown ulimit "${u.name}" (one of ${[...ULIMITS].join(', ')})`, 'ulimit');
    return { name: u.name, soft: Number(u.soft), hard: Number(u.hard) };
  });
  const rootMounts = exec.mounts.filter((m) => m.dest === '/');
  if (rootMounts.length !== 1) throw new InvalidArgumentError('exec op needs exactly one mount at /', 'op');
  const outputs = Math.max(0, ...exec.mounts.map((m) => Number(m.output) + 1));

  const { snapshotter } = ctx;
  const actives: { key: string; output: number }[] = [];
  const views: SnapshotView[] = [];
  const committed: string[] = [];
  const leases: CacheLease[] = [];
  let secretDir: SecretDir | undefined;
  const secretEnv: string[] = [];
  const sshSockets: SshAgentSocket[] = [];
  let stepNetwork: StepNetwork | undefined;
  let networkReusable = false;
  const hostname = meta.hostname || 'kiln';
  const runFilesReady = RunFiles.create(env.stateDir);
  // The step's network and its /etc/hosts and /etc/resolv.conf do not depend on its mounts:
  // made while the snapshots are prepared, not after (one step's wait less on every RUN).
  const networkReady = (async () => {
    const runFiles = await runFilesReady;
    stepNetwork = await env.network.forStep(exec.network === llb.NetMode.HOST ? 'host' : exec.network === llb.NetMode.NONE ? 'none' : 'default');
    const hostNetwork = stepNetwork.network === 'host';
    const [hosts, resolvConf] = await Promise.all([
      hostsFile({ hostname, extraHosts: meta.extraHosts, hostNetwork, hostGateway: stepNetwork.hostGateway }).then((text) => runFiles.writeHosts(text)),
      runFiles.writeResolvConf(stepNetwork.resolvConf),
    ]);
    return { stepNetwork, hosts, resolvConf };
  })();
  // Awaited after the mounts; a failure there first must not leave this rejection unhandled.
  networkReady.catch(() => undefined);
  try {
    const secretOf = async (id: string, optional: boolean): Promise<Uint8Array | undefined> => {
      if (!env.sessions.getSecret) throw new OpFailure(`secret ${id}: this worker's session does not serve secrets`);
      const res = await env.sessions.getSecret({ sessionId: env.sessionId, id }, { signal: ctx.signal });
      if (!res.found && !optional) throw new OpFailure(`secret ${id}: not found (pass --secret id=${id},src=FILE)`);
      return res.found ? res.data : undefined;
    };
    for (const e of exec.secretEnv) {
      const data = await secretOf(e.id, e.optional);
      if (data) secretEnv.push(`${e.name}=${new TextDecoder().decode(data)}`);
    }
    // The root mount first, so later mount stubs land in it.
    const ordered = [rootMounts[0]!, ...exec.mounts.filter((m) => m !== rootMounts[0])];
    const specMounts: ExecMount[] = [];
    let rootfs = '';
    // The root when its backend left it unmounted (see `deferMount`): read through this, or mounted first.
    let rootTree: UnmountedTree | undefined;
    for (const m of ordered) {
      ctx.signal?.throwIfAborted();
      if (m.mountType === llb.MountType.TMPFS) {
        specMounts.push({ type: 'tmpfs', dest: cleanRootPath(m.dest), sizeBytes: m.tmpfsOpt && m.tmpfsOpt.size > 0n ? Number(m.tmpfsOpt.size) : undefined });
        continue;
      }
      if (m.mountType === llb.MountType.SECRET) {
        const opt = m.secretOpt;
        if (!opt) throw new InvalidArgumentError(`secret mount at ${m.dest} has no secret options`, 'op');
        const data = await secretOf(opt.id, opt.optional);
        if (!data) continue;
        secretDir ??= await SecretDir.create(env.stateDir);
        const file = await secretDir.add(data, { mode: opt.mode || 0o400, uid: opt.uid, gid: opt.gid });
        specMounts.push({ type: 'bind', source: file, dest: cleanRootPath(m.dest), readonly: true });
        continue;
      }
      if (m.mountType === llb.MountType.SSH) {
        const opt = m.sshOpt ?? { id: 'default', uid: 0, gid: 0, mode: 0o600, optional: false };
        const id = opt.id || 'default';
        const dest = cleanRootPath(m.dest);
        const forward = sshForwarder(env);
        if (!forward || !(await agentForwarded(forward, id, ctx.signal))) {
          if (opt.optional) continue;
          throw new OpFailure(`no SSH agent "${id}" was forwarded for the ssh mount at ${dest} (pass --ssh ${id})`);
        }
        const sock = await SshAgentSocket.listen(await (await runFilesReady).socketPath(), { id, uid: opt.uid, gid: opt.gid, mode: opt.mode || 0o600, forward, logger: env.logger });
        sshSockets.push(sock);
        specMounts.push({ type: 'bind', source: sock.path, dest, readonly: true });
        continue;
      }
      const input = Number(m.input);
      if (input >= ctx.inputs.length) throw new InvalidArgumentError(`mount ${m.dest} reads input ${input} but the op has ${ctx.inputs.length}`, 'op');
      const parent = input >= 0 ? ctx.inputs[input] : undefined;
      if (m.mountType === llb.MountType.CACHE) {
        const id = m.cacheOpt?.id || cleanRootPath(m.dest);
        const sharing = m.cacheOpt?.sharing === llb.CacheSharing.PRIVATE ? 'private' : m.cacheOpt?.sharing === llb.CacheSharing.LOCKED ? 'locked' : 'shared';
        let seed: SnapshotView | undefined;
        if (parent !== undefined) {
          seed = await snapshotter.view(parent);
          views.push(seed);
        }
        // As BuildKit: the input (from=) seeds the whole cache, and source= picks the part mounted.
        const lease = await env.cacheMounts.acquire(id, sharing, seed?.path, ctx.signal, { fresh: env.noCache ? env.buildId : undefined });
        leases.push(lease);
        let source = lease.dir;
        if (m.selector && cleanRootPath(m.selector) !== '/') {
          try {
            source = resolveCacheSource(lease.dir, m.selector);
          } catch (err) {
            throw OpFailure.wrap(`failed to mount cache "${id}" at ${cleanRootPath(m.dest)}`, err);
          }
        }
        specMounts.push({ type: 'bind', source, dest: cleanRootPath(m.dest), readonly: m.readonly });
        continue;
      }
      let root: string;
      if (!m.readonly || m.output >= 0n || parent === undefined) {
        const key = newSnapshotKey(ctx.digest, `mount${actives.length}`);
        actives.push({ key, output: Number(m.output) });
        // The whole root goes to the runtime as it is: a backend whose runtime mounts it (containerd) may leave it unmounted here.
        const deferMount = m.dest === '/' && !m.selector;
        const active = await snapshotter.prepare(key, parent, { signal: ctx.signal, ...(deferMount ? { deferMount } : {}) });
        root = active.path;
        if (deferMount) rootTree = active.unmounted;
      } else {
        const v = await snapshotter.view(parent);
        views.push(v);
        root = v.path;
      }
      const source = m.selector ? await resolveInRoot(root, cleanRootPath(m.selector), { followFinalSymlink: true }) : root;
      if (m.dest === '/') rootfs = source;
      else specMounts.push({ type: 'bind', source, dest: cleanRootPath(m.dest), readonly: m.readonly });
    }

    const cwd = cleanRootPath(meta.cwd || '/');
    const rootMount = rootMounts[0]!;
    let user;
    try {
      user = await resolveExecUser(rootTree ?? rootfs, meta.user);
      if (!rootMount.readonly && !(await isDirInRoot(rootTree, cwd))) {
        await rootTree?.mount();
        await mkdirAllInRoot(rootfs, cwd);
      }
    } catch (err) {
      throw OpFailure.wrap('failed to set up the process', err);
    }
    const { hosts, resolvConf, stepNetwork: { network, networkNamespace } } = await networkReady;
    // After the step's own mounts, as BuildKit orders it: a mount at /etc cannot hide them.
    specMounts.push({ type: 'bind', source: hosts, dest: '/etc/hosts', readonly: true });
    specMounts.push({ type: 'bind', source: resolvConf, dest: '/etc/resolv.conf', readonly: true });
    const processEnv = meta.env.some((e) => e.startsWith('PATH=')) ? [...meta.env] : [`PATH=${DEFAULT_PATH}`, ...meta.env];
    if (meta.proxyEnv) processEnv.push(...proxyEnvList(meta.proxyEnv));

    // Keep log events in output order without blocking the process on the bus.
    let logs = Promise.resolve();
    const tail = new OutputTail();
    const log = (stream: 1 | 2) => (chunk: Uint8Array) => {
      const copy = Uint8Array.from(chunk);
      tail.push(copy);
      logs = logs.then(() => ctx.progress.log(stream, copy));
    };
    const release = await env.limiter.acquire(ctx.signal);
    let result;
    try {
      result = await env.executor.run(
        {
          rootfs,
          readonlyRootfs: rootMount.readonly,
          mounts: specMounts,
          process: { args: [...meta.args], env: [...processEnv, ...secretEnv], cwd, user },
          network,
          ...(networkNamespace ? { networkNamespace } : {}),
          hostname,
          security: exec.security === llb.SecurityMode.INSECURE ? 'insecure' : 'sandbox',
          rlimits,
          ...(meta.shmSize > 0n ? { shmSizeBytes: Number(meta.shmSize) } : {}),
        },
        { stdout: log(1), stderr: log(2), signal: ctx.signal },
      );
      // Its processes are gone (the pid namespace died with its init); without CAP_NET_ADMIN it cannot have rewired the namespace.
      networkReusable = exec.security !== llb.SecurityMode.INSECURE && !ctx.signal?.aborted;
    } finally {
      release();
    }
    await logs;
    const valid = meta.validExitCodes.length > 0 ? meta.validExitCodes : [0];
    if (!valid.includes(result.exitCode)) {
      // The last lines of output travel as details.output (the CLI prints them above the error).
      throw new OpFailure(`process "${meta.args.join(' ')}" did not complete successfully: exit code: ${result.exitCode}`, {
        details: { exitCode: result.exitCode, output: tail.lines().join('\n') },
      });
    }

    const out: string[] = new Array(outputs).fill('');
    for (const a of actives) {
      if (a.output < 0) continue;
      const id = await snapshotter.commit(a.key);
      committed.push(id);
      out[a.output] = id;
    }
    if (out.some((id) => id === '')) throw new InvalidArgumentError('exec op declares an output no mount produces', 'op');
    return out;
  } catch (err) {
    for (const id of committed) await snapshotter.remove(id).catch(() => undefined);
    if (ctx.signal?.aborted && !(err instanceof CanceledError)) throw new CanceledError('exec canceled', { cause: err });
    throw err;
  } finally {
    for (const l of leases) l.release();
    for (const sock of sshSockets) await sock.close().catch(() => undefined);
    // A step that failed before its network was ready waits for it here, so it is released, not leaked.
    await networkReady.catch(() => undefined);
    // Not awaited: a pooled namespace is back at once, a torn-down one goes in the background (the worker's close waits for it).
    void stepNetwork?.release({ reusable: networkReusable });
    await (await runFilesReady.catch(() => undefined))?.dispose().catch(() => undefined);
    await secretDir?.dispose();
    for (const v of views) await v.release().catch(() => undefined);
    for (const a of actives) await snapshotter.remove(a.key).catch(() => undefined);
  }
}

/** Whether `p` is a directory (symlinks followed) in an unmounted root; false for a host root (mkdir there is cheap and idempotent). */
async function isDirInRoot(tree: UnmountedTree | undefined, p: string): Promise<boolean> {
  if (!tree) return false;
  try {
    return (await tree.lookup(p)).isDirectory;
  } catch {
    return false; // mkdir on the mounted tree reports it
  }
}

/** Rejects what this worker cannot run yet, naming it. */
function checkSupported(exec: llb.ExecOp): void {
  const meta = exec.meta!;
  if (meta.cgroupParent) throw new UnimplementedError('cgroup parent is not supported yet');
}

/** Connections to the client's SSH agents through the session's ForwardSsh, if the session serves it (also used by git sources over SSH). */
export function sshForwarder(env: Pick<ExecEnv, 'sessions' | 'sessionId'>): SshForwarder | undefined {
  const forwardSsh = env.sessions.forwardSsh?.bind(env.sessions);
  if (!forwardSsh) return undefined;
  return async function* (id, input, signal) {
    async function* requests() {
      yield { msg: { case: 'header' as const, value: { sessionId: env.sessionId, id } } };
      for await (const data of input) yield { msg: { case: 'data' as const, value: data } };
    }
    for await (const res of forwardSsh(requests(), { signal })) yield res.data;
  };
}

/**
 * Whether the client forwarded agent `id`: one connection opened and closed
 * at once (the client answers not_found when it has no such agent).
 */
export async function agentForwarded(forward: SshForwarder, id: string, signal?: AbortSignal): Promise<boolean> {
  const probe = new AbortController();
  const onAbort = () => probe.abort();
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    for await (const _ of forward(id, (async function* () {})(), probe.signal)) {
      // an agent does not speak first: nothing expected
    }
    return true;
  } catch (err) {
    signal?.throwIfAborted();
    if (err instanceof KilnError && err.code === 'not_found') return false;
    throw OpFailure.wrap(`failed to reach SSH agent "${id}"`, err);
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

/** The step's proxy variables, each in upper and lower case (as BuildKit's exec op). */
export function proxyEnvList(p: llb.ProxyEnv): string[] {
  const out: string[] = [];
  const add = (name: string, value: string) => {
    if (value) out.push(`${name.toUpperCase()}=${value}`, `${name}=${value}`);
  };
  add('http_proxy', p.httpProxy);
  add('https_proxy', p.httpsProxy);
  add('ftp_proxy', p.ftpProxy);
  add('no_proxy', p.noProxy);
  add('all_proxy', p.allProxy);
  return out;
}
