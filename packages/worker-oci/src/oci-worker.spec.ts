import { execFileSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { runWorkerConformance } from '@kiln/worker/testing';
import { createOciWorker } from './oci-worker.js';

/** runc runs containers here: we are root, runc is installed and the host has a static busybox for the rootfs. */
function canRunContainers(): boolean {
  try {
    if (process.getuid?.() !== 0) return false;
    accessSync('/bin/busybox', constants.X_OK);
    execFileSync('runc', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

runWorkerConformance(
  'oci (runc)',
  (deps) => createOciWorker({ id: 'oci-test', ...deps }),
  { exec: canRunContainers() ? 'run' : 'skip' },
);
