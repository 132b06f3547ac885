import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, statSync } from 'node:fs';
import path from 'node:path';

/**
 * Starting a process from a big Node process is slow: libuv forks, and the
 * fork copies the parent's page tables while its event loop waits (about
 * 20 ms at 90 MB RSS on a loaded 2-core host, 60 ms at 360 MB). Hot paths
 * that start many short commands (mount, umount, runc for each build step)
 * go through a small helper process instead: one long-lived `node` with a
 * tiny heap that spawns on our behalf and relays output and exit status
 * over IPC, so the daemon's loop never blocks on a fork.
 *
 * The helper is started on first use and again after it dies (calls in
 * flight then fail). `KILN_SPAWN_HELPER=0` spawns directly.
 */

export interface LightProcessOptions {
  stdout?: (chunk: Uint8Array) => void;
  stderr?: (chunk: Uint8Array) => void;
  /** Written to the command's stdin, which is then closed (default: stdin closed at once). */
  stdin?: Uint8Array;
  /** Variables added to (or replacing) the environment the command inherits. */
  env?: Record<string, string>;
}

export interface LightProcessExit {
  /** Exit code, or null when a signal ended it. */
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** An error starting the command (e.g. ENOENT), as `child_process` reports it. */
export class SpawnError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
    this.name = 'SpawnError';
  }
}

/**
 * Runs `cmd args` (PATH lookup once per command, see resolveCommand; no shell, stdin closed unless `opts.stdin`) and resolves when it
 * ended and all its output was delivered. Rejects with SpawnError when it
 * could not be started.
 */
export async function runLight(cmd: string, args: readonly string[], opts: LightProcessOptions = {}): Promise<LightProcessExit> {
  const file = opts.env?.PATH === undefined ? resolveCommand(cmd) : cmd;
  try {
    if (process.env.KILN_SPAWN_HELPER === '0') return await runDirect(file, args, opts);
    return await helper().run(file, args, opts);
  } catch (err) {
    // The binary went away since it was found: look again next time.
    if (err instanceof SpawnError && err.code === 'ENOENT' && file !== cmd) forgetCommand(cmd);
    throw err;
  }
}

/**
 * The absolute path of `cmd` on PATH, found once and remembered (per PATH
 * value); `cmd` itself when it names a path or is not found (the start then
 * fails with ENOENT as before). A bare name made every start try each PATH
 * directory in turn: on this project's hosts 7 failed execve calls before
 * runc, for each build step.
 */
export function resolveCommand(cmd: string): string {
  if (cmd.includes('/')) return cmd;
  const pathVar = process.env.PATH ?? '';
  if (resolvedFor !== pathVar) {
    resolved.clear();
    resolvedFor = pathVar;
  }
  let file = resolved.get(cmd);
  if (file === undefined) {
    file = searchPath(cmd, pathVar);
    if (file !== undefined) resolved.set(cmd, file);
  }
  return file ?? cmd;
}

/** Drops what `resolveCommand` remembered of `cmd`. */
function forgetCommand(cmd: string): void {
  resolved.delete(cmd);
}

const resolved = new Map<string, string>();
let resolvedFor: string | undefined;

/** The first executable regular file named `cmd` in a PATH directory, as execvp finds it (empty entries are the current directory). */
function searchPath(cmd: string, pathVar: string): string | undefined {
  for (const dir of pathVar.split(':')) {
    const file = path.resolve(dir || '.', cmd);
    try {
      if (!statSync(file).isFile()) continue;
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * Runs `cmd args` like `execFile`: resolves with its output when it exits 0,
 * rejects otherwise with an Error whose message is "cmd args: <stderr or
 * exit status>" and which carries `stderr` and `exitCode`.
 */
export async function execLight(cmd: string, args: readonly string[]): Promise<{ stdout: string; stderr: string }> {
  const out: Uint8Array[] = [];
  const err: Uint8Array[] = [];
  const exit = await runLight(cmd, args, { stdout: (b) => out.push(b), stderr: (b) => err.push(b) });
  const stdout = Buffer.concat(out).toString();
  const stderr = Buffer.concat(err).toString();
  if (exit.code === 0) return { stdout, stderr };
  const status = exit.signal ? `killed by ${exit.signal}` : `exit status ${exit.code}`;
  const e = new Error(`${cmd} ${args.join(' ')}: ${stderr.trim() || status}`) as Error & { stderr: string; exitCode: number | null };
  e.stderr = stderr;
  e.exitCode = exit.code;
  throw e;
}

function runDirect(cmd: string, args: readonly string[], opts: LightProcessOptions): Promise<LightProcessExit> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'], env: opts.env ? { ...process.env, ...opts.env } : process.env });
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(opts.stdin);
    child.stdout!.on('data', (b: Buffer) => opts.stdout?.(b));
    child.stderr!.on('data', (b: Buffer) => opts.stderr?.(b));
    child.once('error', (err: NodeJS.ErrnoException) => reject(new SpawnError(err.message, err.code)));
    // 'close' (not 'exit'): every byte of stdout/stderr has been delivered.
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
}

type ToHelper = { t: 'spawn'; id: number; cmd: string; args: string[]; stdin?: Uint8Array; env?: Record<string, string> };
type FromHelper =
  | { t: 'out'; id: number; fd: 1 | 2; data: Uint8Array }
  | { t: 'error'; id: number; message: string; code?: string }
  | { t: 'exit'; id: number; code: number | null; signal: NodeJS.Signals | null };

// CommonJS, run with `node -e`: no file to find next to this module once it is bundled or run from src.
const HELPER_SOURCE = `
const { spawn } = require('node:child_process');
process.on('disconnect', () => process.exit(0));
process.on('message', (m) => {
  let c;
  const send = (msg) => { if (process.connected) process.send(msg); };
  try {
    c = spawn(m.cmd, m.args, { stdio: [m.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'], env: m.env ? { ...process.env, ...m.env } : process.env });
  } catch (e) {
    send({ t: 'error', id: m.id, message: e.message, code: e.code });
    return;
  }
  if (c.stdin) { c.stdin.on('error', () => {}); c.stdin.end(m.stdin); }
  let failed = false;
  c.stdout.on('data', (d) => send({ t: 'out', id: m.id, fd: 1, data: d }));
  c.stderr.on('data', (d) => send({ t: 'out', id: m.id, fd: 2, data: d }));
  c.once('error', (e) => { failed = true; send({ t: 'error', id: m.id, message: e.message, code: e.code }); });
  c.once('close', (code, signal) => { if (!failed) send({ t: 'exit', id: m.id, code, signal }); });
});
`;

interface Pending {
  opts: LightProcessOptions;
  resolve: (exit: LightProcessExit) => void;
  reject: (err: Error) => void;
}

class SpawnHelper {
  private readonly child: ChildProcess;
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  dead = false;

  constructor() {
    this.child = spawn(process.execPath, ['--max-old-space-size=32', '-e', HELPER_SOURCE], {
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
      serialization: 'advanced',
      env: process.env,
    });
    this.child.on('message', (m: FromHelper) => this.onMessage(m));
    this.child.once('error', (err) => this.fail(err));
    this.child.once('exit', (code, signal) => this.fail(new Error(`spawn helper exited (${signal ?? code})`)));
    this.idle();
  }

  run(cmd: string, args: readonly string[], opts: LightProcessOptions): Promise<LightProcessExit> {
    return new Promise((resolve, reject) => {
      const id = ++this.nextId;
      this.pending.set(id, { opts, resolve, reject });
      // Keep the daemon alive while a command runs, as a direct child's pipes would.
      if (this.pending.size === 1) this.busy();
      const msg: ToHelper = { t: 'spawn', id, cmd, args: [...args], ...(opts.stdin ? { stdin: opts.stdin } : {}), ...(opts.env ? { env: opts.env } : {}) };
      try {
        this.child.send(msg, (err) => {
          if (err) this.settle(id, () => reject(err));
        });
      } catch (err) {
        this.settle(id, () => reject(err as Error));
      }
    });
  }

  private onMessage(m: FromHelper): void {
    const p = this.pending.get(m.id);
    if (!p) return;
    if (m.t === 'out') (m.fd === 1 ? p.opts.stdout : p.opts.stderr)?.(m.data);
    else if (m.t === 'exit') this.settle(m.id, () => p.resolve({ code: m.code, signal: m.signal }));
    else this.settle(m.id, () => p.reject(new SpawnError(m.message, m.code)));
  }

  private settle(id: number, done: () => void): void {
    if (!this.pending.delete(id)) return;
    if (this.pending.size === 0) this.idle();
    done();
  }

  private fail(err: Error): void {
    this.dead = true;
    for (const [id, p] of [...this.pending]) this.settle(id, () => p.reject(err));
  }

  private busy(): void {
    this.child.ref();
    this.child.channel?.ref();
  }

  private idle(): void {
    this.child.unref();
    this.child.channel?.unref();
  }
}

let current: SpawnHelper | undefined;

function helper(): SpawnHelper {
  if (!current || current.dead) current = new SpawnHelper();
  return current;
}
