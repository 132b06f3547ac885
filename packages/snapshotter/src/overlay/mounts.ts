import { readFileSync } from 'node:fs';
import path from 'node:path';
import { mountFs, MountError, unmountFs } from '@kiln/common';

/** Mounts an overlay at `target`: read-only over `lowers` (top first) alone, or writable with an upper and work dir. */
export async function mountOverlay(target: string, options: string): Promise<void> {
  await mountFs('overlay', 'overlay', target, options);
}

/**
 * The `-o` string of an overlay mount. Paths must not hold ',' or ':' (the
 * snapshotter checks its root once); `lowers` are top first. `volatile`
 * (with an upper dir): no sync at unmount or fsync, the caller makes the
 * upper dir durable itself.
 */
export function overlayOptions(lowers: readonly string[], upper?: { upper: string; work: string }, opts: { volatile?: boolean } = {}): string {
  const parts = [`lowerdir=${lowers.join(':')}`];
  if (upper) parts.push(`upperdir=${upper.upper}`, `workdir=${upper.work}`);
  if (upper && opts.volatile) parts.push('volatile');
  // Explicit, so hosts with other module defaults give the same upper-dir format.
  parts.push('index=off', 'redirect_dir=off', 'metacopy=off');
  return parts.join(',');
}

/**
 * Unmounts `target`. A busy mount (a process still has a file open below
 * it) is retried for a while, then detached lazily so the caller can go on;
 * `onLazy` is told why. Not mounted is success.
 */
export async function unmount(target: string, onLazy?: (reason: string) => void): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await unmountFs(target);
      return;
    } catch (err) {
      const kind = err instanceof MountError ? err.kind : 'other';
      if (kind === 'not_mounted') return;
      if (kind !== 'busy') throw err;
      if (attempt < 10) {
        await new Promise((r) => setTimeout(r, 20 * (attempt + 1)));
        continue;
      }
      onLazy?.((err as Error).message);
      await unmountFs(target, { lazy: true });
      return;
    }
  }
}

/** Mount points below `root` (not `root` itself) in this process's mount namespace, deepest first. */
export function mountsUnder(root: string): string[] {
  const prefix = root.endsWith(path.sep) ? root : root + path.sep;
  const out: string[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const mp = line.split(' ')[4];
    if (mp === undefined) continue;
    const p = unescapeMountinfo(mp);
    if (p.startsWith(prefix)) out.push(p);
  }
  return out.sort((a, b) => b.length - a.length);
}

/** mountinfo escapes space, tab, newline and backslash as \ooo. */
function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}
