import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve as resolvePath } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeClusterCerts, type ClusterCerts } from './certs.js';
import { startContainerd, type TestContainerd } from './containerd.js';
import { e2eWorker, e2eWorkerTier, type WorkerKind } from './e2e-worker.js';
import type { KilnNats } from './kiln-nats.js';
import { freePort } from './ports.js';

/** The repository root (the folder with nx.json), found from this file. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'nx.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the repository root (nx.json)');
    dir = up;
  }
  return dir;
}

/** bin/kiln; it runs the compiled packages, so `npm run build` must have run. */
export function kilnBin(): string {
  return join(repoRoot(), 'bin', 'kiln');
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `bin/kiln ARGS` to completion. */
export function runKiln(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(kilnBin(), args, { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

/** A daemon process started by a test; `logs()` returns what it printed. */
export interface DaemonProcess {
  readonly name: string;
  logs(): string;
  stop(): Promise<void>;
  /** SIGKILL, as a crash: the process announces nothing on its way out. */
  kill(): Promise<void>;
}

function spawnDaemon(name: string, args: string[], env: NodeJS.ProcessEnv = {}): { proc: ChildProcess; handle: DaemonProcess } {
  const proc = spawn(kilnBin(), ['daemon', ...args], { env: { ...process.env, KILN_LOG_LEVEL: 'debug', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  return {
    proc,
    handle: {
      name,
      logs: () => out,
      async stop() {
        if (proc.exitCode !== null || proc.signalCode !== null) return;
        proc.kill('SIGTERM');
        const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      },
      async kill() {
        if (proc.exitCode !== null || proc.signalCode !== null) return;
        proc.kill('SIGKILL');
        await exited;
      },
    },
  };
}

async function waitFor(what: string, check: () => Promise<boolean> | boolean, handle: DaemonProcess, proc: ChildProcess, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`${handle.name} exited with ${proc.exitCode} before ${what}:\n${handle.logs()}`);
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  await handle.stop();
  throw new Error(`${handle.name}: timed out waiting for ${what}:\n${handle.logs()}`);
}

function canConnect(opts: net.NetConnectOpts): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(opts);
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

export interface Kilnd extends DaemonProcess {
  /** The address the CLI uses (`--addr`). */
  readonly addr: string;
  readonly root: string;
}

/**
 * Test daemons run steps with loopback only unless a spec passes
 * `testNetwork().args` (its own bridge and subnet): parallel daemons must
 * never share kilnd's default bridge kiln0 and its subnet.
 */
const TEST_NETWORK_DEFAULT = ['--network-mode', 'none'];

/**
 * containerds of daemons started on a caller's `root`, by that root. One
 * outlives a daemon killed by a test (as a node's containerd outlives kilnd):
 * the restart on that root uses it and finds the killed daemon's tasks. A
 * daemon's stop stops it; its data stays under `<root>/test-containerd` for
 * the next daemon on the root.
 */
const containerdByRoot = new Map<string, Promise<TestContainerd>>();
/** The last daemon process started on each root with `containerdByRoot`'s containerd. */
const latestOnRoot = new Map<string, ChildProcess>();

function containerdForRoot(root: string): Promise<TestContainerd> {
  const key = resolvePath(root);
  let started = containerdByRoot.get(key);
  if (!started) {
    started = startContainerd({ dataDir: join(key, 'test-containerd') });
    containerdByRoot.set(key, started);
    started.catch(() => containerdByRoot.delete(key));
  }
  return started;
}

async function stopContainerdForRoot(root: string): Promise<void> {
  const key = resolvePath(root);
  const started = containerdByRoot.get(key);
  containerdByRoot.delete(key);
  await (await started?.catch(() => undefined))?.stop();
}

/**
 * Starts the all-in-one daemon on a unix socket in a temp root (removed on
 * stop), or in `root` (kept on stop, so a test can restart on the same state).
 * `env` is added to the daemon's environment (e.g. DOCKER_CONFIG); `args`
 * to its command line (e.g. `--allow-insecure-entitlement security.insecure`).
 * `worker` defaults to `e2eWorker()` (KILN_E2E_WORKER). `containerd` runs on
 * `opts.containerd`; else on a containerd started for this daemon (own
 * socket, root and state dir) and stopped with it, or with `root`, the one
 * started for that root (see `containerdByRoot`).
 */
export async function startKilnd(opts: { worker?: WorkerKind; root?: string; env?: NodeJS.ProcessEnv; args?: string[]; containerd?: TestContainerd } = {}): Promise<Kilnd> {
  const root = opts.root ?? mkdtempSync(join(tmpdir(), 'kiln-e2e-'));
  const sock = join(root, 'kiln.sock');
  const worker = opts.worker ?? e2eWorker();
  let ownContainerd: TestContainerd | undefined;
  let containerd = opts.containerd;
  const rootContainerd = worker === 'containerd' && !containerd && opts.root !== undefined;
  if (rootContainerd) containerd = await containerdForRoot(opts.root!);
  else if (worker === 'containerd' && !containerd) containerd = ownContainerd = await startContainerd();
  const workerArgs = ['--worker', worker, ...(containerd ? ['--containerd-address', containerd.address] : [])];
  const { proc, handle } = spawnDaemon('kilnd', ['--root', root, '--addr', `unix://${sock}`, ...workerArgs, ...TEST_NETWORK_DEFAULT, ...(opts.args ?? [])], opts.env);
  try {
    await waitFor('its socket', () => existsSync(sock) && canConnect({ path: sock }), handle, proc);
  } catch (err) {
    await ownContainerd?.stop();
    // No daemon on the root holds its containerd (a first start failed): stop it.
    if (rootContainerd && !latestOnRoot.has(resolvePath(root))) await stopContainerdForRoot(root);
    throw err;
  }
  if (rootContainerd) latestOnRoot.set(resolvePath(root), proc);
  return {
    ...handle,
    addr: `unix://${sock}`,
    root,
    async stop() {
      await handle.stop();
      await ownContainerd?.stop();
      // The root's containerd goes with the last daemon started on the root, not with a stale handle of a killed one.
      if (rootContainerd && latestOnRoot.get(resolvePath(root)) === proc) {
        latestOnRoot.delete(resolvePath(root));
        await stopContainerdForRoot(root);
      }
      if (!opts.root) rmSync(root, { recursive: true, force: true });
    },
  };
}

export interface KilnCluster {
  /** The solver's address, for the CLI's `--addr`. */
  readonly addr: string;
  /** What the CLI needs besides `--addr`: KILN_TLS_* naming the client certificate (empty without mTLS). */
  readonly env: Record<string, string>;
  /** The cluster's CA and certificates (one per role, named after it); undefined without mTLS. */
  readonly certs: ClusterCerts | undefined;
  /** Each tier's own address (`tcp://127.0.0.1:PORT`), by id (e.g. `worker-oci-1`). */
  readonly addrs: Readonly<Record<string, string>>;
  readonly tiers: DaemonProcess[];
  logs(): string;
  stop(): Promise<void>;
}

/** A tier of a cluster: its name, or the name with an id (default `<tier>-1`) and extra `kiln daemon` flags. */
export type ClusterTier = string | { tier: string; id?: string; args?: string[] };

/**
 * Starts every tier as its own process, each serving HTTP/2 Connect on a
 * free 127.0.0.1 port and finding the others through NATS: a URL, or a
 * `startKilnNats()` server, which each tier logs in to as its own user over
 * TLS. A tier may appear more than once with distinct ids (e.g. two workers).
 * Tiers talk mutual TLS with certificates from a fresh CA (one per role,
 * see `makeClusterCerts`) unless `opts.tls` is false (plain loopback TCP).
 * The default worker tier is `e2eWorkerTier()`. `worker-containerd` tiers
 * without `--containerd-address` share one containerd started for the
 * cluster and stopped with it.
 */
/**
 * Waits until `kiln workers` on the cluster lists every one of `ids` (the
 * solver's directory has heard them all), polling every 200 ms; throws with
 * the last listing after `timeoutMs` (default 20 s).
 */
export async function waitForWorkers(cluster: Pick<KilnCluster, 'addr' | 'env'>, ids: readonly string[], timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const res = await runKiln(['workers', '--addr', cluster.addr], { env: cluster.env });
    if (ids.every((id) => res.stdout.includes(id))) return;
    if (Date.now() > deadline) throw new Error(`workers never listed ${ids.join(', ')}:\n${res.stdout}${res.stderr}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export async function startKilnCluster(nats: string | KilnNats, tiers: ClusterTier[] = ['solver', 'frontend', 'exporters', e2eWorkerTier(), 'content'], opts: { tls?: boolean } = {}): Promise<KilnCluster> {
  const natsUrl = typeof nats === 'string' ? nats : nats.url;
  const root = mkdtempSync(join(tmpdir(), 'kiln-cluster-'));
  const started: DaemonProcess[] = [];
  let solverAddr = '';
  let certs: ClusterCerts | undefined;
  let containerd: TestContainerd | undefined;
  const addrs: Record<string, string> = {};
  try {
    if (opts.tls !== false) certs = await makeClusterCerts(join(root, 'certs'));
    for (const spec of tiers) {
      const { tier, id = `${tier}-1`, args = [] } = typeof spec === 'string' ? { tier: spec } : spec;
      const port = await freePort();
      const natsArgs = typeof nats === 'string' ? [] : nats.tierArgs(tier);
      const tlsArgs = certs ? certs.args(tier.startsWith('worker') ? 'worker' : tier) : [];
      let containerdArgs: string[] = [];
      if (tier === 'worker-containerd' && !args.includes('--containerd-address')) {
        containerd ??= await startContainerd();
        containerdArgs = ['--containerd-address', containerd.address];
      }
      const { proc, handle } = spawnDaemon(id, ['--tier', tier, '--nats', natsUrl, ...natsArgs, '--listen', `tcp://127.0.0.1:${port}`, '--root', join(root, id), '--id', id, ...tlsArgs, ...containerdArgs, ...TEST_NETWORK_DEFAULT, ...args]);
      started.push(handle);
      await waitFor('its port', () => canConnect({ host: '127.0.0.1', port }), handle, proc);
      addrs[id] = `tcp://127.0.0.1:${port}`;
      if (tier === 'solver') solverAddr = `tcp://127.0.0.1:${port}`;
    }
  } catch (err) {
    for (const t of started) await t.stop();
    await containerd?.stop();
    rmSync(root, { recursive: true, force: true });
    throw err;
  }
  return {
    addr: solverAddr,
    env: certs ? certs.env('client') : {},
    certs,
    addrs,
    tiers: started,
    logs: () => started.map((t) => `--- ${t.name} ---\n${t.logs()}`).join('\n'),
    async stop() {
      for (const t of [...started].reverse()) await t.stop();
      await containerd?.stop();
      reapLeftovers(root);
      rmSync(root, { recursive: true, force: true });
    },
  };
}

/**
 * What a tier killed by a test (SIGKILL mid-RUN) leaves under `root` and
 * no restart reaped: its runc containers (killed and deleted) and mounts
 * (detached), so the root can be removed.
 */
function reapLeftovers(root: string): void {
  const found = spawnSync('find', [root, '-maxdepth', '5', '-type', 'd', '-path', '*/runc/state'], { encoding: 'utf8' }).stdout ?? '';
  for (const state of found.split('\n').filter(Boolean)) {
    const ids = (spawnSync('runc', ['--root', state, 'list', '-q'], { encoding: 'utf8' }).stdout ?? '').split('\n').filter(Boolean);
    for (const id of ids) {
      spawnSync('runc', ['--root', state, 'kill', '--all', id, 'KILL']);
      spawnSync('runc', ['--root', state, 'delete', '--force', id]);
    }
  }
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').filter((m) => m.startsWith(`${root}/`));
  for (const m of mounts.reverse()) spawnSync('umount', ['-l', m]);
}
