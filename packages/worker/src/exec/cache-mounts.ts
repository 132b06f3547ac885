import { createHash, randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { closeSync, constants, lstatSync, mkdirSync, openSync, readlinkSync, realpathSync } from 'node:fs';
import { mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export type CacheSharing = 'shared' | 'private' | 'locked';

interface Instance {
  dir: string;
  shared: number;
  exclusive: boolean;
  waiters: (() => void)[];
  /** Builds (`fresh` tokens) that already emptied this instance: a build empties a cache once, at its first use. */
  emptiedBy: string[];
}

/** How many `fresh` tokens an instance remembers (the builds of one worker running at once are far fewer). */
const EMPTIED_BY_KEPT = 64;

/** A cache directory in use by one run; `release()` exactly once when the run ends. */
export interface CacheLease {
  readonly dir: string;
  release(): void;
}

/**
 * Persistent `type=cache` directories under `<stateDir>/cache/<sha256(id)>/<n>`:
 * they survive builds and daemon restarts, keyed by id alone (as BuildKit
 * keys them). Instance 0 is the cache; `private` mounts that find it busy
 * get instance 1, 2, ... (kept for later private use). Sharing:
 * - shared: any number of runs use instance 0 at once (waits only for a locked run);
 * - locked: one run at a time on instance 0, the others wait;
 * - private: a free instance for this run alone, a new one when all are busy.
 * A new instance is seeded from `seed` (the mount's input: mode, owner and
 * content applied on creation). Locks are per process: one worker owns a state dir.
 */
export class CacheMounts {
  private readonly instances = new Map<string, Promise<Instance[]>>();

  constructor(private readonly stateDir: string) {}

  /**
   * `fresh` (a token naming the build, for a step the solver reruns under
   * `--no-cache`): the first run of that build to use the instance empties it
   * and seeds it again, once no other run holds it; later steps of the same
   * build see what the earlier ones left (BuildKit's testOnBuildWithCacheMount:
   * an ONBUILD trigger fills the cache a later RUN reads), and later builds
   * see what the build left.
   */
  async acquire(id: string, sharing: CacheSharing, seed: string | undefined, signal?: AbortSignal, opts: { fresh?: string } = {}): Promise<CacheLease> {
    const key = createHash('sha256').update(id).digest('hex');
    const list = await this.load(key, id);
    let inst: Instance;
    let empty = false;
    if (sharing === 'private') {
      inst = list.find((i) => i.shared === 0 && !i.exclusive) ?? this.add(key, list);
      inst.exclusive = true;
      empty = opts.fresh !== undefined && !inst.emptiedBy.includes(opts.fresh);
    } else {
      inst = list[0] ?? this.add(key, list);
      for (;;) {
        empty = opts.fresh !== undefined && !inst.emptiedBy.includes(opts.fresh);
        const alone = sharing === 'locked' || empty;
        if (!(inst.exclusive || (alone && inst.shared > 0))) break;
        await this.waitTurn(inst, signal);
      }
      if (sharing === 'locked' || empty) inst.exclusive = true;
      else inst.shared++;
    }
    try {
      if (empty) {
        await rm(inst.dir, { recursive: true, force: true });
        inst.emptiedBy.push(opts.fresh!);
        if (inst.emptiedBy.length > EMPTIED_BY_KEPT) inst.emptiedBy.shift();
      }
      await this.seed(inst.dir, seed);
    } catch (err) {
      this.unhold(inst, sharing === 'shared' && !empty ? 'shared' : 'exclusive');
      throw err;
    }
    let hold: 'shared' | 'exclusive' = sharing === 'shared' && !empty ? 'shared' : 'exclusive';
    if (empty && sharing === 'shared') {
      // Emptied alone; now shared like any other shared run.
      inst.exclusive = false;
      inst.shared++;
      hold = 'shared';
      for (const wake of inst.waiters.splice(0)) wake();
    }
    let done = false;
    return {
      dir: inst.dir,
      release: () => {
        if (done) return;
        done = true;
        this.unhold(inst, hold);
      },
    };
  }

  private unhold(inst: Instance, hold: 'shared' | 'exclusive'): void {
    if (hold === 'shared') inst.shared--;
    else inst.exclusive = false;
    for (const wake of inst.waiters.splice(0)) wake();
  }

  /** Waits until `inst` changes hands (or `signal` aborts), with no listener left behind on the signal. */
  private async waitTurn(inst: Instance, signal: AbortSignal | undefined): Promise<void> {
    signal?.throwIfAborted();
    let onAbort: (() => void) | undefined;
    try {
      await new Promise<void>((resolve) => {
        inst.waiters.push(resolve);
        onAbort = () => resolve();
        signal?.addEventListener('abort', onAbort, { once: true });
      });
    } finally {
      if (onAbort) signal?.removeEventListener('abort', onAbort);
    }
    signal?.throwIfAborted();
  }

  /** The instances of a key found on disk (after a restart), loaded once. */
  private load(key: string, id: string): Promise<Instance[]> {
    let list = this.instances.get(key);
    if (!list) {
      list = (async () => {
        const base = path.join(this.stateDir, 'cache', key);
        await mkdir(base, { recursive: true });
        await writeFile(path.join(base, 'id'), id);
        const names = (await readdir(base)).filter((n) => /^\d+$/.test(n)).sort((a, b) => Number(a) - Number(b));
        return names.map((n): Instance => ({ dir: path.join(base, n), shared: 0, exclusive: false, waiters: [], emptiedBy: [] }));
      })();
      this.instances.set(key, list);
    }
    return list;
  }

  /** A new instance, in the list at once (synchronously) so concurrent callers see it. */
  private add(key: string, list: Instance[]): Instance {
    const inst: Instance = { dir: path.join(this.stateDir, 'cache', key, String(list.length)), shared: 0, exclusive: false, waiters: [], emptiedBy: [] };
    list.push(inst);
    return inst;
  }

  /** Creates the directory on first use: a copy of `seed` (or empty, mode 0755), made whole before it appears. */
  private async seed(dir: string, seed: string | undefined): Promise<void> {
    try {
      await stat(dir);
      return;
    } catch {
      // first use
    }
    const tmp = `${dir}.new-${randomBytes(4).toString('hex')}`;
    // cp -a keeps modes, owners and times (the seed's mode and owner become the cache's).
    if (seed) await run('cp', ['-a', '--', seed, tmp]);
    else await mkdir(tmp, { mode: 0o755 });
    await rename(tmp, dir).catch(async (err: NodeJS.ErrnoException) => {
      await rm(tmp, { recursive: true, force: true });
      if (err.code !== 'EEXIST' && err.code !== 'ENOTEMPTY') throw err;
    });
  }
}

/** A cache mount's `source=` that would leave the cache, or is not a directory. */
export class CacheSourceError extends Error {}

/**
 * The host path of the subdirectory `selector` of the cache instance `dir`
 * for a `type=cache,source=SUBDIR` mount (BuildKit mounts only that part of
 * the cache), creating missing directories (0755). Steps write the cache, so
 * a component may be a symlink: one that stays inside the cache is followed,
 * one that points outside it (absolute, or `..` above it) is refused, as
 * BuildKit refuses it. The result is opened and its real path checked once
 * more through the descriptor.
 *
 * Left open: a step running at the same time on the same shared cache could
 * swap a component for a link between this check and runc's bind mount.
 */
export function resolveCacheSource(dir: string, selector: string): string {
  const root = realpathSync(dir);
  let pending = selector.split('/').filter((c) => c !== '' && c !== '.');
  let cur = root;
  let links = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === '..') {
      if (cur === root) throw new CacheSourceError(`source "${selector}" leaves the cache`);
      cur = path.dirname(cur);
      continue;
    }
    const next = path.join(cur, part);
    let st;
    try {
      st = lstatSync(next);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      mkdirSync(next, { mode: 0o755 });
      cur = next;
      continue;
    }
    if (st.isSymbolicLink()) {
      if (++links > 40) throw new CacheSourceError(`source "${selector}": too many levels of symbolic links`);
      const target = readlinkSync(next);
      if (path.isAbsolute(target)) throw new CacheSourceError(`source "${selector}" resolves through the symlink ${path.relative(root, next)} -> ${target} outside the cache`);
      pending = [...target.split('/').filter((c) => c !== '' && c !== '.'), ...pending];
      continue;
    }
    if (!st.isDirectory()) throw new CacheSourceError(`source "${selector}": ${path.relative(root, next)} is not a directory`);
    cur = next;
  }
  const fd = openSync(cur, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  try {
    const real = readlinkSync(`/proc/self/fd/${fd}`);
    const rel = path.relative(root, real);
    if (rel === '..' || rel.startsWith(`..${path.sep}`) || path.isAbsolute(rel)) throw new CacheSourceError(`source "${selector}" leaves the cache`);
    return real;
  } finally {
    closeSync(fd);
  }
}
