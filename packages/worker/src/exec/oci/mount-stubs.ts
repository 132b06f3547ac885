import { lstatSync } from 'node:fs';
import path from 'node:path';
import { removeEmptyInRoot, resolveInRoot, type UnmountedTree } from '@kiln/snapshotter';
import type { Logger } from '@kiln/common';
import type { ExecSpec } from '../../executor.js';
import { STANDARD_MOUNTS } from './oci-spec.js';

/**
 * Every missing path component of each mount destination in the rootfs
 * (the OCI runtime would create them), as paths inside the rootfs with the
 * symlinks the image has resolved, deepest last. Read before the step,
 * while only the worker writes the rootfs (from its layers when `tree` is
 * given: the rootfs is not mounted on the host). Empty for a read-only rootfs.
 */
export async function missingMountPoints(spec: ExecSpec, tree?: Pick<UnmountedTree, 'lookup'>): Promise<string[]> {
  if (spec.readonlyRootfs) return [];
  const dests = [...STANDARD_MOUNTS.map((m) => m.destination), ...spec.mounts.map((m) => m.dest)];
  const out = new Set<string>();
  for (const dest of dests) {
    let prefix = '';
    let missing = false;
    for (const part of dest.split('/').filter(Boolean)) {
      prefix += `/${part}`;
      if (missing) {
        // Below a missing component: its path inside the rootfs is plain (no symlinks yet).
        out.add(prefix);
        continue;
      }
      const at = tree ? await lookupInTree(tree, prefix) : await lookupOnHost(spec.rootfs, prefix);
      if (!at.exists) {
        missing = true;
        prefix = at.path;
        out.add(prefix);
      }
    }
  }
  return [...out].sort();
}

/**
 * Removes the stubs (deepest first) that are still empty files or empty
 * directories, each walked from the rootfs without following a symlink:
 * one the step moved away or replaced (CVE-2024-23652's class) is left as
 * the step made it.
 */
export function removeMountPointStubs(rootfs: string, stubs: readonly string[], logger: Logger): void {
  for (const stub of [...stubs].reverse()) {
    try {
      removeEmptyInRoot(rootfs, stub);
    } catch (err) {
      logger.warn({ err, stub }, 'failed to remove a mount-point stub');
    }
  }
}

/** Where `p` leads in the host tree `rootfs` (absolute inside it) and whether something is there. */
async function lookupOnHost(rootfs: string, p: string): Promise<{ path: string; exists: boolean }> {
  const host = await resolveInRoot(rootfs, p, { followFinalSymlink: true });
  return { path: `/${path.relative(rootfs, host)}`, exists: exists(host) };
}

/** The same in a tree read from its layers: a parent that is missing or not a directory makes `p` missing, as lstat on the host says. */
async function lookupInTree(tree: Pick<UnmountedTree, 'lookup'>, p: string): Promise<{ path: string; exists: boolean }> {
  try {
    return await tree.lookup(p);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return { path: p, exists: false };
    throw err;
  }
}

/** One lstat without a thread-pool round trip (as resolveInRoot's own): about twenty per step, on its path. */
function exists(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}
