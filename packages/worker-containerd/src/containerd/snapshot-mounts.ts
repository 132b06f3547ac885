import { readFileSync } from 'node:fs';
import { lstat, mkdir, readdir, rmdir } from 'node:fs/promises';
import path from 'node:path';
import { execLight, KilnError } from '@kiln/common';
import type { SnapshotUsage } from '@kiln/snapshotter';

/** A mount as containerd's snapshots service returns it. */
export interface SnapshotMount {
  type: string;
  source: string;
  options: string[];
}

/** Mount data above this is passed with paths relative to their common parent (the kernel takes one page). */
const MAX_OPTIONS = 3000;

/**
 * Where the tree of `mounts` can be read on the host: a bind mount of one
 * directory is that directory (nothing to mount); an overlay is mounted at
 * `target`. `redirect_dir=off,metacopy=off` are added so an upper dir is
 * always plain files plus whiteouts, whatever the host's module defaults.
 */
export async function mountSnapshot(mounts: readonly SnapshotMount[], target: string): Promise<{ path: string; mounted: boolean }> {
  if (mounts.length !== 1) throw new KilnError('internal', `containerd returned ${mounts.length} mounts for a snapshot; expected one`);
  const m = mounts[0]!;
  if (m.type === 'bind' || m.options.includes('bind') || m.options.includes('rbind')) return { path: m.source, mounted: false };
  if (m.type !== 'overlay') throw new KilnError('unimplemented', `containerd snapshot mount of type "${m.type}" is not supported (use the overlayfs snapshotter)`);
  const options = plainUpperOptions(m.options);
  await mkdir(target, { recursive: true });
  let data = options.join(',');
  if (data.length <= MAX_OPTIONS) {
    await execLight('mount', ['-t', 'overlay', 'overlay', '-o', data, target]);
    return { path: target, mounted: true };
  }
  // A deep chain: name the directories relative to the snapshots dir, mounting from there.
  const dirs = overlayDirs(options);
  const base = commonParent(dirs);
  data = options.map((o) => relativeOption(o, base)).join(',');
  if (data.length > 4000) throw new KilnError('failed_precondition', `the overlay of this snapshot has too many layers to mount (${dirs.length} directories)`);
  await execLight('sh', ['-c', 'cd -- "$1" && shift && exec mount "$@"', 'sh', base, '-t', 'overlay', 'overlay', '-o', data, target]);
  return { path: target, mounted: true };
}

/**
 * The mounts of a snapshot as containerd's shim should make them for a
 * task's rootfs: overlays get `redirect_dir=off,metacopy=off` as Kiln's own
 * host mounts do, so what the step writes lands in the upper dir as plain
 * files and whiteouts (the layer differ reads that dir).
 */
export function taskRootfsMounts(mounts: readonly SnapshotMount[]): SnapshotMount[] {
  return mounts.map((m) => ({ type: m.type, source: m.source, options: m.type === 'overlay' ? plainUpperOptions(m.options) : [...m.options] }));
}

function plainUpperOptions(options: readonly string[]): string[] {
  const out = [...options];
  for (const o of ['redirect_dir=off', 'metacopy=off']) if (!out.some((x) => x.startsWith(o.split('=')[0]! + '='))) out.push(o);
  return out;
}

function overlayDirs(options: readonly string[]): string[] {
  const out: string[] = [];
  for (const o of options) {
    const [k, v] = splitOption(o);
    if (k === 'lowerdir') out.push(...v!.split(':'));
    else if (k === 'upperdir' || k === 'workdir') out.push(v!);
  }
  return out;
}

function splitOption(o: string): [string, string | undefined] {
  const i = o.indexOf('=');
  return i < 0 ? [o, undefined] : [o.slice(0, i), o.slice(i + 1)];
}

function relativeOption(o: string, base: string): string {
  const [k, v] = splitOption(o);
  if (k === 'lowerdir') return `lowerdir=${v!.split(':').map((d) => path.relative(base, d)).join(':')}`;
  if (k === 'upperdir' || k === 'workdir') return `${k}=${path.relative(base, v!)}`;
  return o;
}

function commonParent(dirs: readonly string[]): string {
  let base = path.dirname(dirs[0]!);
  while (!dirs.every((d) => d.startsWith(base + path.sep))) base = path.dirname(base);
  return base;
}

/**
 * The layer dirs (top first) of a snapshot from containerd's mounts of it:
 * an active snapshot's upper dir then its lower dirs (which become the
 * committed snapshot's, as overlayfs commits in place), or a view's lower
 * dirs; a bind mount is one dir. Undefined for anything else.
 */
export function layersOfMounts(mounts: readonly SnapshotMount[], kind: 'active' | 'view'): { dirs: string[] } | undefined {
  if (mounts.length !== 1) return undefined;
  const m = mounts[0]!;
  if (m.type === 'bind' || m.options.includes('bind') || m.options.includes('rbind')) return { dirs: [m.source] };
  if (m.type !== 'overlay') return undefined;
  const opts = Object.fromEntries(m.options.map(splitOption));
  const lower = opts['lowerdir']?.split(':') ?? [];
  if (kind === 'view') return lower.length > 0 && !opts['upperdir'] ? { dirs: lower } : undefined;
  return opts['upperdir'] ? { dirs: [opts['upperdir'], ...lower] } : undefined;
}

/** The options of an overlay mount besides its dirs (e.g. containerd's `index=off`); undefined for a non-overlay. */
export function overlayExtraOptions(mounts: readonly SnapshotMount[]): string[] | undefined {
  const m = mounts[0];
  if (mounts.length !== 1 || m?.type !== 'overlay') return undefined;
  return m.options.filter((o) => !['lowerdir', 'upperdir', 'workdir'].includes(splitOption(o)[0]));
}

/** The read-only mounts of layer dirs `dirs` (top first), as containerd's overlayfs makes a view's: a bind mount of a single dir, else an overlay of them all as lower dirs. */
export function viewMounts(dirs: readonly string[], extraOptions: readonly string[]): SnapshotMount[] {
  if (dirs.length === 1) return [{ type: 'bind', source: dirs[0]!, options: ['ro', 'rbind'] }];
  return [{ type: 'overlay', source: 'overlay', options: [...extraOptions, `lowerdir=${dirs.join(':')}`] }];
}

/** Unmounts `target` (not mounted is fine; a busy mount is retried, then detached lazily) and removes the empty directory. */
export async function unmountSnapshot(target: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await execLight('umount', [target]);
      break;
    } catch (err) {
      const msg = (err as Error).message;
      if (/not mounted|no mount point|mountpoint not found|No such file/i.test(msg)) break;
      if (!/busy/i.test(msg)) throw err;
      if (attempt < 10) {
        await new Promise((r) => setTimeout(r, 20 * (attempt + 1)));
        continue;
      }
      await execLight('umount', ['-l', target]);
      break;
    }
  }
  await rmdir(target).catch(() => undefined);
}

/** Mount points at or below `dir` in this process's mount namespace, deepest first. */
export function mountPointsUnder(dir: string): string[] {
  const out: string[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const mp = line.split(' ')[4];
    if (mp === undefined) continue;
    const p = mp.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (p === dir || p.startsWith(dir + path.sep)) out.push(p);
  }
  return out.sort((a, b) => b.length - a.length);
}

/** The directory holding what a snapshot itself stores: the upper dir of an active overlay, the top lower dir of a view, or a bind mount's source. */
export function ownDir(mounts: readonly SnapshotMount[]): string | undefined {
  const m = mounts[0];
  if (!m) return undefined;
  if (m.type !== 'overlay') return m.source;
  const opts = Object.fromEntries(m.options.map(splitOption));
  return opts.upperdir ?? opts.lowerdir?.split(':')[0];
}

/** Apparent bytes of regular files (hardlinks once) and inodes of the tree at `dir`, itself included. */
export async function treeUsage(dir: string): Promise<SnapshotUsage> {
  const seen = new Set<number>();
  const usage: SnapshotUsage = { sizeBytes: 0, inodes: 1 };
  const walk = async (d: string): Promise<void> => {
    for (const ent of await readdir(d, { withFileTypes: true })) {
      const st = await lstat(path.join(d, ent.name));
      if (seen.has(st.ino)) continue;
      seen.add(st.ino);
      usage.inodes++;
      if (st.isFile()) usage.sizeBytes += st.size;
      else if (st.isDirectory()) await walk(path.join(d, ent.name));
    }
  };
  await walk(dir);
  return usage;
}
