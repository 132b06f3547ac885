import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { silentLogger, type Logger } from '@kiln/common';
import { createOverlaySnapshotter } from '@kiln/snapshotter';
import { createBackendWorker, type BackendSnapshotter, type BackendWorkerOptions, type Worker } from '@kiln/worker';
import { createRuncExecutor } from './runc/runc-executor.js';

export type OciSnapshotterKind = 'overlayfs' | 'native';

export interface OciWorkerOptions extends BackendWorkerOptions {
  /** The runc binary. Default "runc" (from PATH). Runc state and bundles go under `<root>/runc`. */
  runcPath?: string;
  /**
   * Where snapshots live: "overlayfs" (default; under `<root>/overlay`,
   * falling back to "native" with a warning when this host cannot mount an
   * overlay there) or "native" (plain directories under `<root>/snapshots`).
   */
  snapshotter?: OciSnapshotterKind;
}

/** The OCI worker: the base worker over an overlayfs (or directory) snapshotter and runc. */
export function createOciWorker(options: OciWorkerOptions): Worker {
  const executor = createRuncExecutor({ stateDir: path.join(options.root, 'runc'), runcPath: options.runcPath, logger: options.logger });
  const logger = (options.logger ?? silentLogger()).child({ component: 'worker-oci' });
  return createBackendWorker(options, 'oci', executor, 'runc', chooseSnapshotter(options, logger));
}

function chooseSnapshotter(options: OciWorkerOptions, logger: Logger): BackendSnapshotter | undefined {
  if (options.snapshotter === 'native') return undefined;
  const root = path.join(options.root, 'overlay');
  const reason = overlayUnavailable(root);
  if (reason !== undefined) {
    logger.warn({ root, reason }, 'overlayfs snapshots unavailable here: using native (directory) snapshots');
    return undefined;
  }
  return { snapshotter: createOverlaySnapshotter({ root, logger: options.logger }), name: 'overlayfs' };
}

/** Why an overlay cannot be mounted under `root` (undefined: it can), by trying one. */
function overlayUnavailable(root: string): string | undefined {
  let probe: string | undefined;
  try {
    // Under tmp/: the snapshotter reaps it at open should a crash leave the probe behind.
    mkdirSync(path.join(root, 'tmp'), { recursive: true });
    probe = mkdtempSync(path.join(root, 'tmp', 'probe-'));
    for (const d of ['lower1', 'lower2', 'upper', 'work', 'mnt']) mkdirSync(path.join(probe, d));
    const opts = `lowerdir=${probe}/lower1:${probe}/lower2,upperdir=${probe}/upper,workdir=${probe}/work`;
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', opts, path.join(probe, 'mnt')], { stdio: ['ignore', 'ignore', 'pipe'] });
    execFileSync('umount', [path.join(probe, 'mnt')], { stdio: ['ignore', 'ignore', 'pipe'] });
    return undefined;
  } catch (err) {
    return String((err as { stderr?: Buffer }).stderr ?? '').trim() || (err as Error).message;
  } finally {
    if (probe) rmSync(probe, { recursive: true, force: true });
  }
}
