/**
 * The environment a daemon process starts with: the caller's, plus a fixed
 * glibc malloc mmap threshold unless the caller set one. glibc raises that
 * threshold to the size of every large block freed (up to 32 MiB); after
 * the first transfers, the daemon's 1 MiB buffers come from the main heap,
 * which fragments and never shrinks: its RSS doubled over 100 builds
 * (4 at a time) while the V8 heap stayed flat (`npm run bench -- memory`).
 * Fixed at 128 KiB (glibc's initial value), blocks that size and up get
 * their own mappings and go back to the system when freed. bin/kiln and
 * bin/kilnd set the same default for a daemon started by hand.
 */
export const DAEMON_MMAP_THRESHOLD = '131072';

export function daemonEnv(env: Readonly<Record<string, string | undefined>>): Record<string, string | undefined> {
  return { ...env, MALLOC_MMAP_THRESHOLD_: env.MALLOC_MMAP_THRESHOLD_ || DAEMON_MMAP_THRESHOLD };
}
