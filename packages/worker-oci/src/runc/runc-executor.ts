import { randomBytes } from 'node:crypto';
import { lstatSync, mkdirSync, rmdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { CanceledError, execLight, KilnError, runLight, SpawnError, silentLogger, type Logger } from '@kiln/common';
import { missingMountPoints, ociSpec, removeMountPointStubs, serializeOciSpec, type ExecIO, type ExecResult, type ExecSpec, type Executor } from '@kiln/worker';

export interface RuncExecutorOptions {
  /** Directory for runc's state (`runc --root`) and the per-run bundles; created if absent. */
  stateDir: string;
  /** The runc binary. Default "runc" (from PATH). */
  runcPath?: string;
  logger?: Logger;
}

/**
 * An Executor that runs each process with `runc run` in a fresh bundle
 * (config.json from `ociSpec`, rootfs = the prepared snapshot). runc's own
 * failures are told apart from the process's exit code through runc's JSON
 * log. Cancellation is `runc kill KILL`. Mount-point stubs that runc creates
 * in a writable rootfs are removed afterwards, walked from the rootfs by
 * directory fds without following any symlink: the step may have replaced
 * a parent of a stub with a symlink to a host directory (CVE-2024-23652's
 * class). Needs root.
 */
export class RuncExecutor implements Executor {
  private readonly runc: string;
  private readonly logger: Logger;

  constructor(private readonly opts: RuncExecutorOptions) {
    this.runc = opts.runcPath ?? 'runc';
    this.logger = (opts.logger ?? silentLogger()).child({ component: 'runc-executor' });
  }

  private reaped: Promise<void> | undefined;

  /** Kills and deletes the containers and bundles a killed daemon left behind (once; also before the first run). */
  reapStale(): Promise<void> {
    this.reaped ??= (async () => {
      const stateDir = path.join(this.opts.stateDir, 'state');
      let ids: string[] = [];
      try {
        ids = (await this.output(['--root', stateDir, 'list', '-q'])).split('\n').filter(Boolean);
      } catch {
        // no state dir yet
      }
      for (const id of ids) {
        await this.exec(['--root', stateDir, 'kill', '--all', id, 'KILL']).catch(() => undefined);
        await this.exec(['--root', stateDir, 'delete', '--force', id]).catch((err: unknown) => this.logger.warn({ err, id }, 'failed to delete a stale container'));
      }
      if (ids.length > 0) this.logger.info({ containers: ids.length }, 'removed containers left by an earlier daemon');
      await rm(path.join(this.opts.stateDir, 'bundles'), { recursive: true, force: true });
    })();
    return this.reaped;
  }

  private stateReady: Promise<unknown> | undefined;

  async run(spec: ExecSpec, io: ExecIO = {}): Promise<ExecResult> {
    io.signal?.throwIfAborted();
    await this.reapStale();
    const id = `kiln-${randomBytes(8).toString('hex')}`;
    const stateDir = path.join(this.opts.stateDir, 'state');
    const bundles = path.join(this.opts.stateDir, 'bundles');
    const bundle = path.join(bundles, id);
    const logFile = path.join(bundle, 'runc-log.json');
    const configFile = path.join(bundle, 'config.json');
    this.stateReady ??= Promise.all([mkdir(stateDir, { recursive: true }), mkdir(bundles, { recursive: true })]).catch((err: unknown) => {
      this.stateReady = undefined;
      throw err;
    });
    await this.stateReady;
    const stubs = await missingMountPoints(spec);
    // The bundle is two small files in a fresh directory: written and removed with plain system
    // calls (tens of microseconds) rather than a thread-pool round trip each, on every step's path.
    mkdirSync(bundle);
    try {
      writeFileSync(configFile, serializeOciSpec(ociSpec(spec)));
      const args = ['--root', stateDir, '--log', logFile, '--log-format', 'json', 'run', '--bundle', bundle, id];
      const exitCode = await this.spawnRunc(args, id, stateDir, io);
      // runc's own failure exits non-zero (1): a run that exited 0 has no error to look for.
      const runcError = exitCode === 0 ? undefined : await readRuncError(logFile);
      if (runcError !== undefined) {
        throw new KilnError('internal', `failed to run "${spec.process.args.join(' ')}": ${runcError}`);
      }
      if (io.signal?.aborted) throw new CanceledError('process killed: the run was canceled');
      return { exitCode };
    } finally {
      // `runc run` removes its container when it returns; only a run that went wrong leaves state behind.
      if (exists(path.join(stateDir, id))) await this.exec(['--root', stateDir, 'delete', '--force', id]).catch(() => undefined);
      await removeBundle(bundle, [configFile, logFile]);
      removeMountPointStubs(spec.rootfs, stubs, this.logger);
    }
  }

  /** `runc run` through the spawn helper (see @kiln/common runLight): its exit code, output streamed to `io`. */
  private async spawnRunc(args: string[], id: string, stateDir: string, io: ExecIO): Promise<number> {
    let exited = false;
    // The container may not exist yet when the abort comes: retry until runc run returns.
    const onAbort = async () => {
      for (let attempt = 0; !exited; attempt++) {
        try {
          await this.exec(['--root', stateDir, 'kill', '--all', id, 'KILL']);
        } catch (err) {
          if (attempt === 100) this.logger.warn({ err, id }, 'runc kill keeps failing');
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    const abortListener = () => void onAbort();
    io.signal?.addEventListener('abort', abortListener, { once: true });
    if (io.signal?.aborted) abortListener();
    try {
      const { code, signal } = await runLight(this.runc, args, { stdout: io.stdout, stderr: io.stderr });
      return code ?? 128 + (signal ? signalNumber(signal) : 0);
    } catch (err) {
      const why = err instanceof SpawnError ? `failed to start runc (${this.runc})` : 'lost track of runc';
      throw new KilnError('unavailable', `${why}: ${(err as Error).message}`, {}, { cause: err });
    } finally {
      exited = true;
      io.signal?.removeEventListener('abort', abortListener);
    }
  }

  private async output(args: string[]): Promise<string> {
    return (await execLight(this.runc, args)).stdout;
  }

  private async exec(args: string[]): Promise<void> {
    await execLight(this.runc, args);
  }
}

/** Creates a RuncExecutor. */
export function createRuncExecutor(opts: RuncExecutorOptions): RuncExecutor {
  return new RuncExecutor(opts);
}

/** Removes a bundle directory holding `files` (some may be missing), with a recursive removal when something else is in it. */
async function removeBundle(bundle: string, files: readonly string[]): Promise<void> {
  for (const f of files) {
    try {
      unlinkSync(f);
    } catch {
      // not written
    }
  }
  try {
    rmdirSync(bundle);
  } catch {
    await rm(bundle, { recursive: true, force: true });
  }
}

function exists(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

/** The last error runc logged, if any. */
async function readRuncError(logFile: string): Promise<string | undefined> {
  let text: string;
  try {
    text = await readFile(logFile, 'utf8');
  } catch {
    return undefined;
  }
  let msg: string | undefined;
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      const entry = JSON.parse(line) as { level?: string; msg?: string };
      if (entry.level === 'error' || entry.level === 'fatal') msg = entry.msg;
    } catch {
      // not JSON: ignore
    }
  }
  return msg;
}

function signalNumber(signal: NodeJS.Signals): number {
  const n: Partial<Record<NodeJS.Signals, number>> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15 };
  return n[signal] ?? 0;
}
