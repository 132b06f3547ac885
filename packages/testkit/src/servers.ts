import type { ChildProcess } from 'node:child_process';
import { accessSync, constants, rmSync } from 'node:fs';
import { delimiter, join } from 'node:path';

/**
 * A server binary for tests: `$envVar` when set (undefined if it is not
 * executable), else the first executable among `names` on PATH and the
 * `candidates` paths (in the order `pathFirst` says). Undefined when absent,
 * so suites can skip with a reason.
 */
export function findExecutable(envVar: string, names: readonly string[], candidates: readonly string[], pathFirst = true): string | undefined {
  const fromEnv = process.env[envVar];
  if (fromEnv) return isExecutable(fromEnv) ? fromEnv : undefined;
  const dirs = (process.env.PATH ?? '').split(delimiter).filter(Boolean);
  const onPath = dirs.flatMap((d) => names.map((n) => join(d, n)));
  return (pathFirst ? [...onPath, ...candidates] : [...candidates, ...onPath]).find(isExecutable);
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Server children still running (with their temp dir), killed if the test process exits first. */
const running = new Map<ChildProcess, string | undefined>();
let exitHookInstalled = false;

/** Tracks a server child until it exits or `untrackServer` is called; its `dir` is removed at process exit. */
export function trackServer(child: ChildProcess, dir: string | undefined): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const [c, d] of running) {
        c.kill('SIGKILL');
        if (d) rmSync(d, { recursive: true, force: true });
      }
    });
  }
  running.set(child, dir);
}

export function untrackServer(child: ChildProcess): void {
  running.delete(child);
}

/**
 * A once-only stop for a server child: SIGTERM, SIGKILL after 5 s, then
 * forget it and remove `dir`. `exited` resolves when the child has exited.
 */
export function serverStopper(child: ChildProcess, exited: Promise<unknown>, dir: string | undefined): () => Promise<void> {
  let stopping: Promise<void> | undefined;
  return () => {
    stopping ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(killer);
      }
      untrackServer(child);
      if (dir) rmSync(dir, { recursive: true, force: true });
    })();
    return stopping;
  };
}
