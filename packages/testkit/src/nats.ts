import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports.js';
import { findExecutable, serverStopper, trackServer, untrackServer } from './servers.js';

export interface StartNatsServerOptions {
  /** Enable JetStream (`-js`) with a temp store dir; default true. */
  jetstream?: boolean;
  /** Path of the nats-server binary; default `findNatsServer()`. */
  binary?: string;
  /** How long to wait for "Server is ready"; default 10000. */
  startTimeoutMs?: number;
  /**
   * A nats-server configuration file (`-c`), e.g. deploy/nats/nats-server.conf
   * with users, permissions and TLS. The address and port flags still win.
   */
  configFile?: string;
  /** Added to the server's environment: the values of `$VAR`s in `configFile`. */
  env?: Record<string, string>;
  /**
   * JetStream store dir to use instead of a fresh temp one (kept by `stop()`:
   * its owner removes it), e.g. to bring a stopped server back with its streams.
   */
  storeDir?: string;
  /** Listen on this port (e.g. to bring a stopped server back where its clients reconnect); default a free one. */
  port?: number;
}

/** A nats-server child process on 127.0.0.1, owned by the test that started it. */
export interface NatsServer extends AsyncDisposable {
  /** `nats://127.0.0.1:<port>`. */
  readonly url: string;
  readonly port: number;
  /** JetStream store dir (removed by `stop()` unless given in the options); absent without JetStream. */
  readonly storeDir: string | undefined;
  /** The last lines the server logged, for failure messages. */
  logs(): string;
  /** Terminates the server (SIGTERM, then SIGKILL after 5 s) and removes the store dir. Idempotent. */
  stop(): Promise<void>;
}

const candidates = ['/usr/sbin/nats-server', '/usr/bin/nats-server', '/usr/local/bin/nats-server'];

/**
 * The nats-server binary: `$KILN_NATS_SERVER`, else the first on PATH or in
 * the usual places (Debian installs it in /usr/sbin). Undefined when absent,
 * so suites can skip with a reason.
 */
export function findNatsServer(): string | undefined {
  return findExecutable('KILN_NATS_SERVER', ['nats-server'], candidates);
}

/**
 * Starts nats-server on 127.0.0.1 on a free port and resolves once it logs
 * "Server is ready". Retries on a port taken meanwhile. Rejects with the
 * server's log when it exits early or is not ready in time.
 */
export async function startNatsServer(opts: StartNatsServerOptions = {}): Promise<NatsServer> {
  const binary = opts.binary ?? findNatsServer();
  if (!binary) throw new Error('failed to start nats-server: binary not found (install Debian package nats-server or set KILN_NATS_SERVER)');
  const jetstream = opts.jetstream ?? true;
  const startTimeoutMs = opts.startTimeoutMs ?? 10_000;
  for (let attempt = 1; ; attempt++) {
    const port = opts.port ?? (await freePort());
    const ownStore = jetstream && !opts.storeDir;
    const storeDir = ownStore ? await mkdtemp(join(tmpdir(), 'kiln-nats-')) : jetstream ? opts.storeDir : undefined;
    try {
      return await launch(binary, port, storeDir, ownStore, startTimeoutMs, opts);
    } catch (err) {
      if (storeDir && ownStore) await rm(storeDir, { recursive: true, force: true });
      if (attempt < 5 && err instanceof PortInUseError && opts.port === undefined) continue;
      throw err;
    }
  }
}

class PortInUseError extends Error {}

async function launch(binary: string, port: number, storeDir: string | undefined, ownStore: boolean, startTimeoutMs: number, opts: StartNatsServerOptions): Promise<NatsServer> {
  const args = opts.configFile ? ['-c', opts.configFile] : [];
  args.push('-a', '127.0.0.1', '-p', String(port));
  if (storeDir) args.push('-js', '-sd', storeDir);
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
  trackServer(child, ownStore ? storeDir : undefined);
  const lines: string[] = [];
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  void exited.then(() => untrackServer(child));

  const ready = new Promise<void>((resolve, reject) => {
    let partial = '';
    const onData = (chunk: Buffer) => {
      const text = partial + chunk.toString('utf8');
      const parts = text.split('\n');
      partial = parts.pop() ?? '';
      for (const line of parts) {
        lines.push(line);
        if (lines.length > 200) lines.shift();
        if (line.includes('Server is ready')) resolve();
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('error', (err) => reject(new Error(`failed to start ${binary}: ${err.message}`)));
    child.once('exit', (code, signal) => {
      const log = lines.join('\n');
      if (/address already in use/i.test(log)) reject(new PortInUseError(`failed to start nats-server: port ${port} in use`));
      else reject(new Error(`failed to start nats-server: exited (${signal ?? code}) before ready\n${log}`));
    });
  });

  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`failed to start nats-server: not ready within ${startTimeoutMs} ms\n${lines.join('\n')}`)), startTimeoutMs);
  });
  const stop = serverStopper(child, exited, ownStore ? storeDir : undefined);
  try {
    await Promise.race([ready, timeout]);
  } catch (err) {
    await stop();
    throw err;
  } finally {
    clearTimeout(timer);
  }
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    storeDir,
    logs: () => lines.join('\n'),
    stop,
    [Symbol.asyncDispose]: stop,
  };
}
