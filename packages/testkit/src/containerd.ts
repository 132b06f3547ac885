import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findExecutable, serverStopper, trackServer, untrackServer } from './servers.js';

/** A containerd child process on its own socket, root and state dir, owned by the test that started it. */
export interface TestContainerd extends AsyncDisposable {
  /** Path of its gRPC socket (give it to the containerd worker as `address`). */
  readonly address: string;
  /** Its `root` (persistent state: metadata, content, snapshots) and `state` (runtime) dirs. */
  readonly root: string;
  readonly state: string;
  /** The last lines it logged, for failure messages. */
  logs(): string;
  /**
   * Terminates it (SIGTERM, SIGKILL after 5 s), kills the runtime shims it
   * started (they outlive containerd by design) and removes its dirs. Idempotent.
   */
  stop(): Promise<void>;
}

/** containerd: `$KILN_CONTAINERD`, else on PATH or /usr/bin (Debian's package `containerd`). */
export function findContainerd(): string | undefined {
  return findExecutable('KILN_CONTAINERD', ['containerd'], ['/usr/bin/containerd', '/usr/local/bin/containerd']);
}

/**
 * Starts containerd (needs root) with a fresh root, state dir and socket
 * under one temp dir (no CRI plugin, no metrics or debug listeners), and
 * resolves once it has booted. Rejects with its log when it exits early or
 * is not up within `startTimeoutMs` (default 15 s). With `dataDir`, its
 * root and state live there and stay at stop (a containerd started again on
 * `dataDir` finds them, as after a node's containerd restart); the socket
 * is still in a temp dir (a unix socket path is short).
 */
export async function startContainerd(opts: { startTimeoutMs?: number; dataDir?: string } = {}): Promise<TestContainerd> {
  const binary = findContainerd();
  if (!binary) throw new Error('failed to start containerd: binary not found (install Debian package containerd or set KILN_CONTAINERD)');
  const dir = await mkdtemp(join(tmpdir(), 'kiln-containerd-'));
  const address = join(dir, 'containerd.sock');
  const root = join(opts.dataDir ?? dir, 'root');
  const state = join(opts.dataDir ?? dir, 'state');
  const config = join(dir, 'config.toml');
  writeFileSync(
    config,
    [
      'version = 2',
      `root = ${JSON.stringify(root)}`,
      `state = ${JSON.stringify(state)}`,
      'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
      '[grpc]',
      `  address = ${JSON.stringify(address)}`,
      '[ttrpc]',
      `  address = ${JSON.stringify(`${address}.ttrpc`)}`,
      '[debug]',
      '  level = "info"',
      '',
    ].join('\n'),
  );
  const child = spawn(binary, ['--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  trackServer(child, undefined);
  // One a test left running (e.g. kept for daemon restarts on one root) goes with the test process, shims too.
  liveAtExit(address, dir);
  const lines: string[] = [];
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  void exited.then(() => untrackServer(child));
  const ready = new Promise<void>((resolve, reject) => {
    let partial = '';
    const onData = (chunk: Buffer) => {
      const parts = (partial + chunk.toString('utf8')).split('\n');
      partial = parts.pop() ?? '';
      for (const line of parts) {
        lines.push(line);
        if (lines.length > 200) lines.shift();
        if (line.includes('containerd successfully booted')) resolve();
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('error', (err) => reject(new Error(`failed to start ${binary}: ${err.message}`)));
    child.once('exit', (code, signal) => reject(new Error(`failed to start containerd: exited (${signal ?? code}) before ready\n${lines.join('\n')}`)));
  });
  const stopServer = serverStopper(child, exited, undefined);
  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      await stopServer();
      killShims(address);
      live.delete(address);
      // The shims may take a moment to go; what they mounted under state/ is theirs to undo.
      await new Promise((r) => setTimeout(r, 100));
      try {
        rmSync(dir, { recursive: true, force: true });
      } catch {
        // a shim still busy in its bundle: leave the temp dir
      }
    })();
    return stopping;
  };
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`failed to start containerd: not up within ${opts.startTimeoutMs ?? 15_000} ms\n${lines.join('\n')}`)), opts.startTimeoutMs ?? 15_000);
  });
  try {
    await Promise.race([ready, timeout]);
  } catch (err) {
    await stop();
    throw err;
  } finally {
    clearTimeout(timer);
  }
  return { address, root, state, logs: () => lines.join('\n'), stop, [Symbol.asyncDispose]: stop };
}

/** The containerds not stopped yet (socket → temp dir): their shims are killed and dirs removed when the test process exits. */
const live = new Map<string, string>();
let exitHook = false;

function liveAtExit(address: string, dir: string): void {
  live.set(address, dir);
  if (exitHook) return;
  exitHook = true;
  process.on('exit', () => {
    for (const [a, d] of live) {
      killShims(a);
      try {
        rmSync(d, { recursive: true, force: true });
      } catch {
        // a mount a shim still holds: leave the temp dir
      }
    }
  });
}

/** SIGKILLs every containerd-shim whose command line names this containerd's socket. */
function killShims(address: string): void {
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let cmdline: string[];
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    if (!cmdline[0]?.includes('containerd-shim')) continue;
    const i = cmdline.indexOf('-address');
    if (i >= 0 && cmdline[i + 1] === address) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}
