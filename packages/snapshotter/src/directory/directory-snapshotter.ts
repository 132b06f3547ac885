import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { CanceledError, InvalidArgumentError, KilnError, NotFoundError, throwIfAborted } from '@kiln/common';
import type { ActiveSnapshot, SnapshotInfo, Snapshotter, SnapshotUsage, SnapshotView } from '../snapshotter.js';

const execFileAsync = promisify(execFile);

export interface DirectorySnapshotterOptions {
  /** Directory holding the snapshots and their metadata; created if absent. */
  root: string;
}

interface CommittedRecord {
  id: string;
  parent?: string;
  label?: string;
  createdAtMs: number;
}

interface ActiveRecord {
  key: string;
  id: string;
  parent?: string;
  createdAtMs: number;
  /** Resolves once the tree is seeded (prepare finished). */
  ready: Promise<void>;
}

interface MetadataFile {
  version: 1;
  committed: CommittedRecord[];
}

/**
 * A Snapshotter keeping each snapshot as a plain directory
 * `<root>/fs/<id>`; `prepare` copies the parent with
 * `cp -a --reflink=auto` (a cheap clone on btrfs/XFS, a full copy
 * elsewhere), so snapshots never share storage. Committed snapshots are
 * listed in `<root>/metadata.json` (rewritten atomically on each change);
 * active snapshots do not survive a restart: their directories are removed
 * when the snapshotter next opens the root.
 *
 * Must run as root to keep file ownership. One snapshotter per root.
 */
export function createDirectorySnapshotter(options: DirectorySnapshotterOptions): Snapshotter {
  if (!options.root) throw new InvalidArgumentError('root must be set', 'root');
  return new DirectorySnapshotterImpl(path.resolve(options.root));
}

class DirectorySnapshotterImpl implements Snapshotter {
  private readonly fsDir: string;
  private readonly metadataPath: string;
  private readonly committed = new Map<string, CommittedRecord>();
  private readonly active = new Map<string, ActiveRecord>();
  /** Ids in use by a view or as the source of a copy; removal waits for them. */
  private readonly pins = new Map<string, number>();
  private readonly pendingRemoval = new Set<string>();
  private readonly opened: Promise<void>;
  private saveChain: Promise<void> = Promise.resolve();

  constructor(private readonly root: string) {
    this.fsDir = path.join(root, 'fs');
    this.metadataPath = path.join(root, 'metadata.json');
    this.opened = this.open();
    // Surface open errors on first use, not as an unhandled rejection.
    this.opened.catch(() => undefined);
  }

  private async open(): Promise<void> {
    await mkdir(this.fsDir, { recursive: true });
    let meta: MetadataFile | undefined;
    try {
      meta = JSON.parse(await readFile(this.metadataPath, 'utf8')) as MetadataFile;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new KilnError('internal', `failed to read snapshot metadata ${this.metadataPath}: ${(err as Error).message}`);
      }
    }
    for (const rec of meta?.committed ?? []) this.committed.set(rec.id, rec);
    // Directories without a committed record are leftovers of active snapshots.
    for (const name of await readdir(this.fsDir)) {
      if (!this.committed.has(name)) await rm(path.join(this.fsDir, name), { recursive: true, force: true });
    }
  }

  async prepare(key: string, parent?: string, opts: { signal?: AbortSignal } = {}): Promise<ActiveSnapshot> {
    await this.opened;
    if (!key) throw new InvalidArgumentError('snapshot key must not be empty', 'key');
    if (this.active.has(key)) throw new KilnError('already_exists', `snapshot key ${key} is already active`);
    if (parent !== undefined && !this.committed.has(parent)) throw new NotFoundError(`no committed snapshot ${parent}`);
    throwIfAborted(opts.signal);
    const id = newId();
    const dir = path.join(this.fsDir, id);
    let done!: () => void;
    const rec: ActiveRecord = { key, id, parent, createdAtMs: Date.now(), ready: new Promise((r) => (done = r)) };
    this.active.set(key, rec);
    if (parent !== undefined) this.pin(parent);
    try {
      await mkdir(dir, { mode: 0o755 });
      if (parent !== undefined) {
        await execFileAsync('cp', ['-a', '--reflink=auto', '--', `${path.join(this.fsDir, parent)}/.`, `${dir}/`], {
          signal: opts.signal,
          maxBuffer: 1 << 20,
        });
      }
    } catch (err) {
      this.active.delete(key);
      await rm(dir, { recursive: true, force: true });
      if (opts.signal?.aborted) throw new CanceledError('snapshot prepare canceled', { cause: err });
      const stderr = (err as { stderr?: string }).stderr?.trim();
      throw new KilnError('internal', `failed to prepare snapshot ${key}: ${stderr || (err as Error).message}`, {}, { cause: err });
    } finally {
      if (parent !== undefined) await this.unpin(parent);
      done();
    }
    return { key, path: dir };
  }

  async commit(key: string, opts: { label?: string } = {}): Promise<string> {
    await this.opened;
    const rec = this.active.get(key);
    if (!rec) throw new NotFoundError(`no active snapshot ${key}`);
    await rec.ready;
    if (opts.label !== undefined && (await this.byLabel(opts.label)) !== undefined) {
      throw new KilnError('already_exists', `a committed snapshot is already labeled ${opts.label}`);
    }
    if (this.active.get(key) !== rec) throw new NotFoundError(`no active snapshot ${key}`);
    this.active.delete(key);
    this.committed.set(rec.id, { id: rec.id, parent: rec.parent, createdAtMs: rec.createdAtMs, ...(opts.label !== undefined ? { label: opts.label } : {}) });
    await this.save();
    return rec.id;
  }

  async byLabel(label: string): Promise<string | undefined> {
    await this.opened;
    for (const r of this.committed.values()) if (r.label === label && !this.pendingRemoval.has(r.id)) return r.id;
    return undefined;
  }

  async view(id: string): Promise<SnapshotView> {
    await this.opened;
    if (!this.committed.has(id) || this.pendingRemoval.has(id)) throw new NotFoundError(`no committed snapshot ${id}`);
    this.pin(id);
    let released = false;
    return {
      id,
      path: path.join(this.fsDir, id),
      release: async () => {
        if (released) return;
        released = true;
        await this.unpin(id);
      },
    };
  }

  async remove(keyOrId: string): Promise<void> {
    await this.opened;
    const act = this.active.get(keyOrId);
    if (act) {
      await act.ready;
      if (this.active.get(keyOrId) !== act) return;
      this.active.delete(keyOrId);
      await rm(path.join(this.fsDir, act.id), { recursive: true, force: true });
      return;
    }
    if (!this.committed.has(keyOrId)) return;
    if ((this.pins.get(keyOrId) ?? 0) > 0) {
      // Still read by a view or a prepare: hide it now, delete on the last unpin.
      this.pendingRemoval.add(keyOrId);
      return;
    }
    await this.deleteCommitted(keyOrId);
  }

  async usage(keyOrId: string): Promise<SnapshotUsage> {
    await this.opened;
    const act = this.active.get(keyOrId);
    const id = act?.id ?? (this.committed.has(keyOrId) ? keyOrId : undefined);
    if (id === undefined) throw new NotFoundError(`no snapshot ${keyOrId}`);
    await act?.ready;
    const seen = new Set<number>();
    const usage: SnapshotUsage = { sizeBytes: 0, inodes: 0 };
    const walk = async (dir: string): Promise<void> => {
      for (const ent of await readdir(dir, { withFileTypes: true })) {
        const p = path.join(dir, ent.name);
        const st = await lstat(p);
        if (seen.has(st.ino)) continue;
        seen.add(st.ino);
        usage.inodes++;
        if (st.isFile()) usage.sizeBytes += st.size;
        else if (st.isDirectory()) await walk(p);
      }
    };
    usage.inodes++;
    await walk(path.join(this.fsDir, id));
    return usage;
  }

  async list(): Promise<SnapshotInfo[]> {
    await this.opened;
    const out: SnapshotInfo[] = [];
    for (const r of this.committed.values()) {
      if (this.pendingRemoval.has(r.id)) continue;
      out.push({ kind: 'committed', name: r.id, parent: r.parent, createdAtMs: r.createdAtMs, ...(r.label !== undefined ? { label: r.label } : {}) });
    }
    for (const r of this.active.values()) out.push({ kind: 'active', name: r.key, parent: r.parent, createdAtMs: r.createdAtMs });
    return out.sort((a, b) => a.createdAtMs - b.createdAtMs);
  }

  async close(): Promise<void> {
    await this.opened.catch(() => undefined);
    await this.saveChain.catch(() => undefined);
  }

  private pin(id: string): void {
    this.pins.set(id, (this.pins.get(id) ?? 0) + 1);
  }

  private async unpin(id: string): Promise<void> {
    const n = (this.pins.get(id) ?? 1) - 1;
    if (n > 0) {
      this.pins.set(id, n);
      return;
    }
    this.pins.delete(id);
    if (this.pendingRemoval.has(id)) await this.deleteCommitted(id);
  }

  private async deleteCommitted(id: string): Promise<void> {
    this.pendingRemoval.delete(id);
    if (!this.committed.delete(id)) return;
    // Metadata first: a crash after it leaves an orphan directory that open() removes.
    await this.save();
    await rm(path.join(this.fsDir, id), { recursive: true, force: true });
  }

  /** Writes the committed list atomically; writes are serialized. */
  private save(): Promise<void> {
    const run = async () => {
      const meta: MetadataFile = { version: 1, committed: [...this.committed.values()] };
      const tmp = `${this.metadataPath}.${process.pid}.tmp`;
      await writeFile(tmp, JSON.stringify(meta, null, 2));
      await rename(tmp, this.metadataPath);
    };
    const next = this.saveChain.then(run, run);
    this.saveChain = next.catch(() => undefined);
    return next;
  }
}

function newId(): string {
  return randomBytes(16).toString('hex');
}
