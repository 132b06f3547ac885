import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { get as httpGet } from 'node:http';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports.js';
import { findExecutable, serverStopper, trackServer, untrackServer } from './servers.js';

export interface StartRegistryOptions {
  /** Require basic auth with this one user (an htpasswd file with a bcrypt entry). */
  htpasswd?: { user: string; password: string };
  /** Path of the registry binary; default `findRegistry()`. */
  binary?: string;
  /** How long to wait for the registry to answer on /v2/; default 10000. */
  startTimeoutMs?: number;
  /** Listen on the first of these ports that is free (e.g. ports fetch refuses); default any free port. */
  ports?: readonly number[];
}

/** A distribution registry child process on 127.0.0.1 with filesystem storage, owned by the test that started it. */
export interface TestRegistry extends AsyncDisposable {
  /** `http://127.0.0.1:<port>`. */
  readonly url: string;
  /** `127.0.0.1:<port>`: the registry part of image references. */
  readonly host: string;
  readonly port: number;
  /** Temp dir holding the config, the htpasswd file and the storage (removed by `stop()`). */
  readonly dir: string;
  /** The last lines the registry logged, for failure messages. */
  logs(): string;
  /** Terminates the registry (SIGTERM, then SIGKILL after 5 s) and removes its dir. Idempotent. */
  stop(): Promise<void>;
}

const candidates = ['/usr/bin/docker-registry', '/usr/local/bin/registry', '/usr/bin/registry'];

/**
 * The registry binary: `$KILN_REGISTRY`, else `docker-registry` (Debian's
 * package) or `registry` on PATH or in the usual places. Undefined when
 * absent, so suites can skip with a reason.
 */
export function findRegistry(): string | undefined {
  return findExecutable('KILN_REGISTRY', ['docker-registry', 'registry'], candidates, false);
}


const BCRYPT_ALPHABET = './ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
const BASE64_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/**
 * A bcrypt hash of `password` (the registry's htpasswd accepts bcrypt only),
 * cost 5 to keep tests fast. Uses the system's crypt(3) through Perl
 * (perl-base and libcrypt1 are essential on Debian; libxcrypt does bcrypt),
 * else `htpasswd -nbB` from apache2-utils.
 */
export function bcryptHash(password: string, cost = 5): string {
  const salt = randomBytes(16)
    .toString('base64')
    .slice(0, 22)
    .split('')
    .map((c) => BCRYPT_ALPHABET[BASE64_ALPHABET.indexOf(c)])
    .join('');
  const setting = `$2b$${String(cost).padStart(2, '0')}$${salt}`;
  const perl = spawnSync('perl', ['-e', 'print crypt($ENV{KILN_PW}, $ENV{KILN_SALT})'], {
    env: { ...process.env, KILN_PW: password, KILN_SALT: setting },
    encoding: 'utf8',
  });
  if (perl.status === 0 && perl.stdout.startsWith(setting)) return perl.stdout;
  const htpasswd = spawnSync('htpasswd', ['-nbBC', String(Math.max(cost, 4)), 'x', password], { encoding: 'utf8' });
  const line = htpasswd.status === 0 ? htpasswd.stdout.trim() : '';
  if (line.startsWith('x:$2')) return line.slice(2);
  throw new Error('failed to make a bcrypt hash: neither perl crypt() with bcrypt nor htpasswd (apache2-utils) is available');
}


class PortInUseError extends Error {}

/**
 * Starts a registry (Debian's docker-registry, the reference distribution
 * server) on 127.0.0.1 on a free port, with filesystem storage and deletes
 * enabled in a temp dir, optionally behind htpasswd basic auth. Resolves once
 * `/v2/` answers; retries on a port taken meanwhile; rejects with the log
 * when the registry exits early or is not ready in time.
 */
export async function startRegistry(opts: StartRegistryOptions = {}): Promise<TestRegistry> {
  const binary = opts.binary ?? findRegistry();
  if (!binary) throw new Error('failed to start the registry: binary not found (install Debian package docker-registry or set KILN_REGISTRY)');
  const startTimeoutMs = opts.startTimeoutMs ?? 10_000;
  const wanted = opts.ports ? [...opts.ports] : undefined;
  for (let attempt = 1; ; attempt++) {
    const port = wanted ? wanted.shift() : await freePort();
    if (port === undefined) throw new PortInUseError(`failed to start the registry: ports ${opts.ports!.join(', ')} are all in use`);
    const dir = await mkdtemp(join(tmpdir(), 'kiln-registry-'));
    try {
      return await launch(binary, port, dir, opts, startTimeoutMs);
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      if ((wanted ? wanted.length > 0 : attempt < 5) && err instanceof PortInUseError) continue;
      throw err;
    }
  }
}

async function launch(binary: string, port: number, dir: string, opts: StartRegistryOptions, startTimeoutMs: number): Promise<TestRegistry> {
  const lines = [
    'version: 0.1',
    'log:',
    '  level: info',
    '  accesslog:',
    '    disabled: true',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${JSON.stringify(join(dir, 'data'))}`,
    '  delete:',
    '    enabled: true',
    '  maintenance:',
    '    uploadpurging:',
    '      enabled: false',
    'http:',
    `  addr: 127.0.0.1:${port}`,
    `  secret: ${randomBytes(16).toString('hex')}`,
  ];
  if (opts.htpasswd) {
    if (opts.htpasswd.user.includes(':')) throw new Error('failed to start the registry: htpasswd user may not contain ":"');
    const file = join(dir, 'htpasswd');
    await writeFile(file, `${opts.htpasswd.user}:${bcryptHash(opts.htpasswd.password)}\n`, { mode: 0o600 });
    lines.push('auth:', '  htpasswd:', '    realm: kiln-test', `    path: ${JSON.stringify(file)}`);
  }
  const config = join(dir, 'config.yml');
  await writeFile(config, lines.join('\n') + '\n');

  const child = spawn(binary, ['serve', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  trackServer(child, dir);
  const log: string[] = [];
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  void exited.then(() => untrackServer(child));
  const onData = (() => {
    let partial = '';
    return (chunk: Buffer) => {
      const parts = (partial + chunk.toString('utf8')).split('\n');
      partial = parts.pop() ?? '';
      for (const line of parts) {
        log.push(line);
        if (log.length > 200) log.shift();
      }
    };
  })();
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);

  const stop = serverStopper(child, exited, dir);

  const url = `http://127.0.0.1:${port}`;
  let exitedEarly: Error | undefined;
  child.once('error', (err) => (exitedEarly = new Error(`failed to start ${binary}: ${err.message}`)));
  void exited.then(() => {
    const text = log.join('\n');
    exitedEarly ??= /address already in use/i.test(text)
      ? new PortInUseError(`failed to start the registry: port ${port} in use`)
      : new Error(`failed to start the registry: exited (${child.signalCode ?? child.exitCode}) before ready\n${text}`);
  });
  const deadline = Date.now() + startTimeoutMs;
  try {
    for (;;) {
      if (exitedEarly) throw exitedEarly;
      if (Date.now() > deadline) throw new Error(`failed to start the registry: /v2/ not answering within ${startTimeoutMs} ms\n${log.join('\n')}`);
      try {
        // node:http, not fetch: the port may be one fetch refuses.
        const status = await httpStatus(`${url}/v2/`, 1000);
        if (status === 200 || status === 401) break;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    url,
    host: `127.0.0.1:${port}`,
    port,
    dir,
    logs: () => log.join('\n'),
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

/** The status of a GET of `url` (node:http, which connects to any port). */
function httpStatus(url: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpGet(url, { timeout: timeoutMs }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.once('timeout', () => req.destroy(new Error('timeout')));
    req.once('error', reject);
  });
}
