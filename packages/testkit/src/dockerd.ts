import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startContainerd, type TestContainerd } from './containerd.js';
import { findExecutable, trackServer, untrackServer } from './servers.js';

export interface StartDockerdOptions {
  /** Path of the dockerd binary; default `findDockerd()`. */
  binary?: string;
  /** Registries (host:port) dockerd may reach over plain HTTP, besides 127.0.0.0/8 (always insecure in dockerd). */
  insecureRegistries?: readonly string[];
  /** Storage driver; default dockerd's choice (overlay2 where it works). */
  storageDriver?: string;
  /** How long to wait for `/_ping`; default 30000. */
  startTimeoutMs?: number;
}

/** Result of one `docker` CLI call. */
export interface DockerRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * A private dockerd child process, owned by the test or benchmark that
 * started it: no bridge, no iptables, its own data root, exec root, pidfile
 * and unix socket in a temp dir, so it never touches the host's docker.
 */
export interface TestDockerd extends AsyncDisposable {
  /** Temp dir holding the socket, data root and exec root (removed by `stop()`). */
  readonly dir: string;
  /** Path of the daemon's unix socket. */
  readonly socket: string;
  /** `unix://<socket>`: the value of `DOCKER_HOST` for clients. */
  readonly host: string;
  /** Environment for docker clients: `process.env` plus `DOCKER_HOST` and a private `DOCKER_CONFIG`. */
  readonly env: NodeJS.ProcessEnv;
  /** Runs the `docker` CLI against this daemon (stdin from `input` when given). Never throws on a non-zero exit. */
  docker(args: readonly string[], opts?: { input?: Uint8Array | string; timeoutMs?: number }): Promise<DockerRun>;
  /** The last lines dockerd logged, for failure messages. */
  logs(): string;
  /** Stops dockerd (SIGTERM, SIGKILL after 15 s) and its containerd, unmounts what it left under `dir`, removes `dir`. Idempotent. */
  stop(): Promise<void>;
}

const candidates = ['/usr/sbin/dockerd', '/usr/bin/dockerd', '/usr/local/bin/dockerd'];

/** The dockerd binary: `$KILN_DOCKERD`, else `dockerd` on PATH or in the usual places. Undefined when absent, so suites can skip with a reason. */
export function findDockerd(): string | undefined {
  return findExecutable('KILN_DOCKERD', ['dockerd'], candidates);
}

/** The docker CLI: `$KILN_DOCKER`, else `docker` on PATH. */
export function findDockerCli(): string | undefined {
  return findExecutable('KILN_DOCKER', ['docker'], ['/usr/bin/docker', '/usr/local/bin/docker']);
}

/**
 * Starts Debian's dockerd (docker.io) with `--bridge=none --iptables=false
 * --ip6tables=false`, a temp `--data-root`/`--exec-root`/pidfile and a unix
 * socket in a temp dir, and an empty daemon config (the host's
 * /etc/docker/daemon.json is not read). Resolves once `/_ping` answers;
 * rejects with the log when it exits early or is not ready in time. Needs root.
 * Containers must run with `--network=none` (there is no bridge).
 *
 * dockerd gets a containerd of its own (`--containerd`): left to itself,
 * dockerd 20.10 uses /run/containerd/containerd.sock whenever that file
 * exists, so a host containerd that died and left its socket behind (or one
 * another tool started) would fail or share every test's dockerd.
 */
export async function startDockerd(opts: StartDockerdOptions = {}): Promise<TestDockerd> {
  const binary = opts.binary ?? findDockerd();
  if (!binary) throw new Error('failed to start dockerd: binary not found (install Debian package docker.io or set KILN_DOCKERD)');
  const startTimeoutMs = opts.startTimeoutMs ?? 30_000;
  const dir = await mkdtemp(join(tmpdir(), 'kiln-dockerd-'));
  const socket = join(dir, 'docker.sock');
  const configFile = join(dir, 'daemon.json');
  const clientConfig = join(dir, 'client');
  let containerd: TestContainerd;
  try {
    containerd = await startContainerd();
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  writeFileSync(configFile, JSON.stringify({ 'insecure-registries': opts.insecureRegistries ?? [] }));
  const args = [
    `--host=unix://${socket}`,
    `--data-root=${join(dir, 'data')}`,
    `--exec-root=${join(dir, 'exec')}`,
    `--pidfile=${join(dir, 'docker.pid')}`,
    `--config-file=${configFile}`,
    '--bridge=none',
    '--iptables=false',
    '--ip6tables=false',
    '--ip-forward=false',
    '--ip-masq=false',
    '--userland-proxy=false',
    `--containerd=${containerd.address}`,
  ];
  if (opts.storageDriver) args.push(`--storage-driver=${opts.storageDriver}`);

  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, DOCKER_CONFIG: clientConfig } });
  trackServer(child, undefined);
  const log: string[] = [];
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  void exited.then(() => untrackServer(child));
  let partial = '';
  const onData = (chunk: Buffer) => {
    const parts = (partial + chunk.toString('utf8')).split('\n');
    partial = parts.pop() ?? '';
    for (const line of parts) {
      log.push(line);
      if (log.length > 300) log.shift();
    }
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  let failed: Error | undefined;
  child.once('error', (err) => (failed = new Error(`failed to start ${binary}: ${err.message}`)));
  void exited.then(() => (failed ??= new Error(`failed to start dockerd: exited (${child.signalCode ?? child.exitCode}) before ready\n${log.join('\n')}`)));

  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const killer = setTimeout(() => child.kill('SIGKILL'), 15_000);
        await exited;
        clearTimeout(killer);
      }
      untrackServer(child);
      await containerd.stop();
      unmountUnder(dir);
      rmSync(dir, { recursive: true, force: true });
    })();
    return stopping;
  };

  const deadline = Date.now() + startTimeoutMs;
  try {
    for (;;) {
      if (failed) throw failed;
      if (Date.now() > deadline) throw new Error(`failed to start dockerd: /_ping not answering within ${startTimeoutMs} ms\n${log.join('\n')}`);
      if (await ping(socket)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
  } catch (err) {
    await stop();
    throw err;
  }

  const host = `unix://${socket}`;
  const env: NodeJS.ProcessEnv = { ...process.env, DOCKER_HOST: host, DOCKER_CONFIG: clientConfig };
  const cli = findDockerCli() ?? 'docker';
  return {
    dir,
    socket,
    host,
    env,
    docker: (cliArgs, runOpts) => runDocker(cli, cliArgs, env, runOpts?.input, runOpts?.timeoutMs ?? 120_000),
    logs: () => log.join('\n'),
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

function ping(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ socketPath, path: '/_ping', method: 'GET', timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => {
      req.destroy();
      resolve(false);
    });
    req.end();
  });
}

function runDocker(cli: string, args: readonly string[], env: NodeJS.ProcessEnv, input: Uint8Array | string | undefined, timeoutMs: number): Promise<DockerRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(cli, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`failed to run ${cli}: ${e.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(input ?? undefined);
  });
}

/** Lazily unmounts every mount point under `dir`, deepest first (overlay mounts, netns and shm bind mounts). */
function unmountUnder(dir: string): void {
  let mountinfo: string;
  try {
    mountinfo = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return;
  }
  const points = mountinfo
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((p): p is string => !!p && (p === dir || p.startsWith(dir + '/')))
    .map((p) => p.replace(/\\(\d{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8))))
    .sort((a, b) => b.length - a.length);
  for (const p of points) spawnSync('umount', ['-l', p], { stdio: 'ignore' });
}
