import { spawn } from 'node:child_process';
import { closeSync, fchmodSync, mkdirSync, openSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { create } from '@bufbuild/protobuf';
import type { Client, Transport } from '@connectrpc/connect';
import { control, session } from '@kiln/api';
import { createKilnClient, createNodeTransport, describeError, asKilnError, loadTlsCredentials, parseAddress, sleep, UnavailableError, type TlsCredentials } from '@kiln/common';
import { BuilderStore, DEFAULT_BUILDER, type Builder } from './builders/builder-store.js';
import { UsageError } from './flags/usage-error.js';
import { daemonEnv } from './daemon-env.js';

export const DEFAULT_ROOT = '/var/lib/kiln';
export const DEFAULT_SOCKET = 'unix:///run/kiln/kiln.sock';

export interface DaemonAddress {
  /** The address to dial. */
  addr: string;
  /** Given by --addr or KILN_ADDR: never auto-started. */
  explicit: boolean;
  /** State directory for an auto-started daemon (KILN_ROOT, a local builder's root=, or /var/lib/kiln). */
  root: string;
  /** The builder it came from ("default" when none was chosen), for buildx.build.ref. */
  builder: string;
  /** A remote builder's mTLS files (`--driver-opt cacert=,cert=,key=`). */
  tls?: TlsFlags;
}

/**
 * Resolves the daemon address: `--addr`, then `--builder NAME`, then
 * `KILN_ADDR`, then `KILN_BUILDER`, then the builder `kiln builder use`
 * chose, else the local all-in-one daemon's socket (`unix://$KILN_ROOT/kiln.sock`
 * when KILN_ROOT is set, else unix:///run/kiln/kiln.sock). A malformed
 * address is a UsageError naming where it came from; an unknown builder a
 * NotFoundError naming it.
 */
export function resolveDaemonAddress(flag: string | undefined, env: Readonly<Record<string, string | undefined>>, builderFlag?: string): DaemonAddress {
  const root = env.KILN_ROOT || DEFAULT_ROOT;
  if (!flag) {
    const store = new BuilderStore(env);
    const name = builderFlag || (env.KILN_ADDR ? undefined : env.KILN_BUILDER || store.current());
    if (name && name !== DEFAULT_BUILDER) return builderAddress(store.get(name));
  }
  const pick = (value: string, field: string): string => {
    try {
      parseAddress(value, field);
    } catch (err) {
      throw new UsageError(`invalid ${field} "${value}": want unix:///PATH or tcp://HOST:PORT`, field, { cause: err });
    }
    return value;
  };
  if (flag !== undefined && flag !== '') return { addr: pick(flag, '--addr'), explicit: true, root, builder: DEFAULT_BUILDER };
  if (env.KILN_ADDR) return { addr: pick(env.KILN_ADDR, 'KILN_ADDR'), explicit: true, root, builder: DEFAULT_BUILDER };
  return { addr: env.KILN_ROOT ? `unix://${join(env.KILN_ROOT, 'kiln.sock')}` : DEFAULT_SOCKET, explicit: false, root, builder: DEFAULT_BUILDER };
}

/** A stored builder's address: a local one may be started (in its root), a remote one never. */
export function builderAddress(b: Builder): DaemonAddress {
  if (b.driver === 'local') return { addr: b.endpoint, explicit: false, root: b.driverOpts.root ?? DEFAULT_ROOT, builder: b.name };
  const o = b.driverOpts;
  const tls = o.cacert || o.cert || o.key ? { caCert: o.cacert, cert: o.cert, key: o.key } : undefined;
  return { addr: b.endpoint, explicit: true, root: DEFAULT_ROOT, builder: b.name, ...(tls ? { tls } : {}) };
}

export interface DaemonConnection {
  address: string;
  transport: Transport;
  control: Client<typeof control.ControlService>;
  session: Client<typeof session.SessionService>;
  info: control.InfoResponse;
  /** Whether this call started the daemon. */
  started: boolean;
  /** The builder the address came from ("default" when none). */
  builder: string;
  /** With `pipelined`: settles with the probe (see ConnectOptions.pipelined); otherwise absent (the probe was awaited). */
  ready?: Promise<void>;
}

/** `--tlscacert`, `--tlscert`, `--tlskey` as given (each may be absent). */
export interface TlsFlags {
  caCert?: string | undefined;
  cert?: string | undefined;
  key?: string | undefined;
}

/** The daemon-connection flags every command takes. */
export const DAEMON_FLAG_SPECS = {
  addr: { kind: 'string' },
  builder: { kind: 'string' },
  tlscacert: { kind: 'string' },
  tlscert: { kind: 'string' },
  tlskey: { kind: 'string' },
} as const;

/** Picks the TLS flags out of parsed flags. */
export const tlsFlagsOf = (f: { tlscacert?: string | undefined; tlscert?: string | undefined; tlskey?: string | undefined }): TlsFlags => ({ caCert: f.tlscacert, cert: f.tlscert, key: f.tlskey });

/**
 * Mutual TLS for a TCP daemon: each of the three files from its flag, else
 * `KILN_TLS_CACERT`/`KILN_TLS_CERT`/`KILN_TLS_KEY`. None: plain TCP.
 * Some but not all: a UsageError naming the missing one.
 */
export function resolveTls(flags: TlsFlags | undefined, env: Readonly<Record<string, string | undefined>>): TlsCredentials | undefined {
  const caCert = flags?.caCert || env.KILN_TLS_CACERT || undefined;
  const cert = flags?.cert || env.KILN_TLS_CERT || undefined;
  const key = flags?.key || env.KILN_TLS_KEY || undefined;
  if (!caCert && !cert && !key) return undefined;
  const missing = !caCert ? '--tlscacert' : !cert ? '--tlscert' : !key ? '--tlskey' : undefined;
  if (missing) throw new UsageError(`${missing} is missing: mutual TLS needs --tlscacert, --tlscert and --tlskey (or KILN_TLS_CACERT, KILN_TLS_CERT, KILN_TLS_KEY)`, missing);
  return loadTlsCredentials({ caCert: caCert!, cert: cert!, key: key! });
}

export interface ConnectOptions {
  /** `--addr`, if given. */
  addr?: string | undefined;
  /** `--builder`, if given (KILN_BUILDER or the current builder otherwise). */
  builder?: string | undefined;
  /** An address already resolved (a builder's); addr, builder and the environment are then not consulted for it. */
  address?: DaemonAddress;
  /** `--tlscacert`/`--tlscert`/`--tlskey`, if given (a remote builder's files, else KILN_TLS_*). */
  tls?: TlsFlags;
  env: Readonly<Record<string, string | undefined>>;
  /** argv that starts the all-in-one daemon; `--addr` and `--root` are appended. */
  daemonCommand: readonly string[];
  /** How long to wait for a started daemon. Default 20 s. */
  startTimeoutMs?: number;
  /** Per-attempt Info timeout. Default 3 s. */
  probeTimeoutMs?: number;
  signal?: AbortSignal;
  /** A transport to use instead of dialling the address (an in-process daemon). */
  transport?: Transport | undefined;
  /**
   * For an explicit address (no daemon to start): return at once, without
   * waiting for the Info probe; its outcome is `ready` (rejects with the
   * UnavailableError an awaited probe throws) and `info` is empty. `kiln
   * build` sends Status, Attach and Solve right behind the probe: one round
   * trip to the daemon fewer before the build starts.
   */
  pipelined?: boolean;
}

/**
 * Connects to the daemon and checks it answers Control.Info. With no
 * explicit address, a daemon that does not answer is started in the
 * background (detached, output to `<root>/kilnd.log`) and polled until it
 * does; concurrent CLIs share one start through a lock file. Throws
 * UnavailableError naming the address (and the log file when it started one).
 */
export async function connectDaemon(opts: ConnectOptions): Promise<DaemonConnection> {
  const where = opts.address ?? resolveDaemonAddress(opts.addr, opts.env, opts.builder);
  // The daemon must prove the solver role (the all-in-one daemon uses a solver certificate too).
  const given = opts.tls && (opts.tls.caCert || opts.tls.cert || opts.tls.key) ? opts.tls : undefined;
  const tls = resolveTls(given ?? where.tls, opts.env);
  const transport = opts.transport ?? createNodeTransport(where.addr, { tls, serverRoles: ['solver'] });
  const ctl = createKilnClient(control.ControlService, transport);
  const conn = (info: control.InfoResponse, started: boolean): DaemonConnection => ({
    address: where.addr,
    transport,
    control: ctl,
    session: createKilnClient(session.SessionService, transport),
    info,
    started,
    builder: where.builder,
  });
  const probe = () => ctl.info({}, { timeoutMs: opts.probeTimeoutMs ?? 3000, signal: opts.signal });

  // A TLS server drops a plain client without a word: say what is likely missing.
  const unreachable = (err: unknown) =>
    new UnavailableError(
      `failed to connect to kiln daemon at ${where.addr}: ${describeError(asKilnError(err))}${where.addr.startsWith('tcp://') && !tls ? ' (if the daemon runs mutual TLS, give --tlscacert, --tlscert and --tlskey or KILN_TLS_*)' : ''}`,
    );
  if (opts.pipelined && where.explicit) {
    // Nothing to start: the caller's first calls go out with the probe on the same connection.
    const ready = probe().then(
      () => undefined,
      (err: unknown) => {
        throw unreachable(err);
      },
    );
    ready.catch(() => undefined); // the caller looks at it when its calls fail
    return { ...conn(create(control.InfoResponseSchema), false), ready };
  }
  let firstErr: unknown;
  try {
    return conn(await probe(), false);
  } catch (err) {
    firstErr = err;
  }
  if (where.explicit) throw unreachable(firstErr);
  if (opts.daemonCommand.length === 0) {
    throw new UnavailableError(`no kiln daemon answers at ${where.addr} and no daemon command is configured to start one`);
  }

  const log = join(where.root, 'kilnd.log');
  const lock = join(where.root, 'kilnd.start.lock');
  const timeoutMs = opts.startTimeoutMs ?? 20_000;
  const deadline = Date.now() + timeoutMs;
  let spawned: { exited?: string; error?: Error } | undefined;
  if (takeLock(lock, timeoutMs)) {
    try {
      spawned = startDaemon(opts.daemonCommand, where, log, opts.env);
    } catch (err) {
      rmSync(lock, { force: true });
      throw err;
    }
  }
  let lastErr: unknown = firstErr;
  try {
    while (Date.now() < deadline) {
      if (spawned?.error) {
        throw new UnavailableError(`failed to start kiln daemon (${opts.daemonCommand.join(' ')}): ${spawned.error.message}`);
      }
      try {
        return conn(await probe(), spawned !== undefined);
      } catch (err) {
        lastErr = err;
      }
      if (spawned?.exited) {
        throw new UnavailableError(`kiln daemon exited (${spawned.exited}) before answering at ${where.addr}; see ${log}`);
      }
      await sleep(200, opts.signal);
    }
  } finally {
    if (spawned) rmSync(lock, { force: true });
  }
  throw new UnavailableError(
    `kiln daemon did not answer at ${where.addr} within ${Math.round(timeoutMs / 1000)}s (${describeError(asKilnError(lastErr))}); see ${log}`,
  );
}

/** Creates the start lock; false when another CLI holds a fresh one. */
function takeLock(lock: string, staleMs: number): boolean {
  mkdirSync(dirname(lock), { recursive: true });
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(lock, String(process.pid), { flag: 'wx' });
      return true;
    } catch {
      try {
        if (Date.now() - statSync(lock).mtimeMs < staleMs) return false;
      } catch {
        continue;
      }
      rmSync(lock, { force: true });
    }
  }
  return false;
}

function startDaemon(
  command: readonly string[],
  where: DaemonAddress,
  log: string,
  env: Readonly<Record<string, string | undefined>>,
): { exited?: string; error?: Error } {
  const state: { exited?: string; error?: Error } = {};
  const sock = parseAddress(where.addr);
  if (sock.kind === 'unix') mkdirSync(dirname(sock.path), { recursive: true });
  mkdirSync(where.root, { recursive: true, mode: 0o700 });
  // The daemon's log may quote build input: readable by its owner only.
  const fd = openSync(log, 'a', 0o600);
  fchmodSync(fd, 0o600);
  try {
    const child = spawn(command[0]!, [...command.slice(1), '--addr', where.addr, '--root', where.root], {
      detached: true,
      stdio: ['ignore', fd, fd],
      env: daemonEnv(env) as NodeJS.ProcessEnv,
    });
    child.once('error', (err) => {
      state.error = err;
    });
    child.once('exit', (code, signal) => {
      state.exited = signal ? `signal ${signal}` : `exit code ${code}`;
    });
    child.unref();
  } finally {
    closeSync(fd);
  }
  return state;
}
