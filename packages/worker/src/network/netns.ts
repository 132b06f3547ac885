import { open, rm } from 'node:fs/promises';
import { execLight, resolveCommand } from '@kiln/common';

/**
 * Network namespaces kept alive by a bind mount of their nsfs file on a
 * plain file (what `ip netns add` does under /run/netns; here under Kiln's
 * own state dir, so a daemon reaps only its own).
 */

/** Creates a fresh network namespace pinned at `file` (which must not exist). */
export async function createNetns(file: string): Promise<void> {
  await (await open(file, 'wx', 0o444)).close();
  try {
    // unshare(1) unshares the namespace and bind-mounts it on the file; `true` exits at once
    // (by its absolute path: unshare's own PATH search would try every directory first).
    await execLight('unshare', [`--net=${file}`, resolveCommand('true')]);
  } catch (err) {
    await rm(file, { force: true });
    throw err;
  }
}

/** Unpins and removes the namespace at `file`: it is gone once no process runs in it. Missing files are fine. */
export async function removeNetns(file: string): Promise<void> {
  // -l: the mount goes even if a process still holds it; the namespace dies with that process.
  await execLight('umount', ['-l', file]).catch(() => undefined);
  await rm(file, { force: true });
}
