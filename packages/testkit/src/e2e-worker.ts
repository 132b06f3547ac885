/** The workers a test daemon can run steps on. */
export type WorkerKind = 'oci' | 'containerd';

/**
 * The worker e2e daemons run on when a spec does not pin one:
 * `KILN_E2E_WORKER` (`oci`, the default, or `containerd`, which
 * tools/e2e-containerd.sh sets to run the e2e suite on the containerd
 * worker, each daemon on a containerd the testkit starts for it).
 */
export function e2eWorker(): WorkerKind {
  const value = process.env.KILN_E2E_WORKER ?? 'oci';
  if (value !== 'oci' && value !== 'containerd') throw new Error(`KILN_E2E_WORKER must be oci or containerd, got "${value}"`);
  return value;
}

/** The cluster tier of `e2eWorker()`: `worker-oci` or `worker-containerd`. */
export function e2eWorkerTier(): `worker-${WorkerKind}` {
  return `worker-${e2eWorker()}`;
}
