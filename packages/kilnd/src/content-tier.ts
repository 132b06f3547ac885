import { openLocalContentStore, type LocalContentStore } from '@kiln/content-store';
import type { Logger } from '@kiln/common';
import { join } from 'node:path';
import type { DaemonOptions } from './options.js';

/**
 * Opens the content store under `ROOT/content` and starts the `[gc]` policy
 * from the daemon config on it (the policy stops when the store closes).
 */
export async function openContentTier(
  opts: Pick<DaemonOptions, 'root' | 'gc'>,
  logger: Logger,
  publish: (subject: string, data: Uint8Array) => Promise<void>,
): Promise<LocalContentStore> {
  const store = await openLocalContentStore({ root: join(opts.root, 'content'), logger, publish });
  if (opts.gc) {
    const { intervalMs, keepBytes, keepDurationMs } = opts.gc;
    store.startGcPolicy({
      intervalMs,
      keepBytes,
      keepDurationMs,
      onResult: (r) => {
        if (r.removed.length || r.ingestsRemoved.length || r.leasesExpired.length) {
          logger.info({ blobs: r.removed.length, bytesFreed: r.bytesFreed, ingests: r.ingestsRemoved.length, leases: r.leasesExpired.length }, 'gc policy run');
        }
      },
    });
    logger.debug({ gc: opts.gc }, 'gc policy started');
  }
  return store;
}
