import { SqliteLineageRecords, type LineageRecords } from './layers/lineage-records.js';
import { openWorkerDb, type Database, type Statement } from './worker-db.js';

/**
 * Retentions of worker refs: which owner keeps which ref (and its snapshot)
 * alive. Persistent retentions are written to SQLite (WAL) so the refs come
 * back, with the same ids and snapshots, after the worker restarts;
 * ephemeral ones live in memory only. Every method is synchronous.
 */
export interface RetainedRefs {
  /** Adds `owner`'s retention of `ref`; false when it already had one. */
  add(ref: string, snapshotId: string, owner: string, ephemeral: boolean): boolean;
  /** Removes `owner`'s retention of `ref`; false when it had none. */
  remove(ref: string, owner: string): boolean;
  /** Owners retaining `ref` (persistent and ephemeral). */
  owners(ref: string): string[];
  /** Every persisted retention, for restoring refs at start. */
  persisted(): { ref: string; snapshotId: string; owner: string }[];
  /** Snapshot ids of every persisted retention (never removed on close). */
  persistedSnapshots(): Set<string>;
  /** The layer lineage of committed snapshots, kept in the same file (see LineageRecords). */
  readonly lineage: LineageRecords;
  close(): void;
}

/** Retentions persisted in the SQLite file `dbPath` (created when absent, an older one upgraded); `:memory:` keeps them in memory. */
export function openRetainedRefs(dbPath: string): RetainedRefs {
  // NORMAL (WAL: a write survives a killed daemon, not maybe a power loss), not an fsync per retention
  // on the event loop, one per RUN step: the retained snapshots' own files (upper dirs written by the
  // step) are never fsynced, so a FULL row never promised a ref that outlives a power loss. A
  // retention lost that way reaps its snapshot at start; the solver's record then finds the ref
  // missing, drops itself and the step runs again (VertexCache.lookup).
  const db = openWorkerDb(dbPath, { synchronous: 'NORMAL' });
  // The lineage is written on every commit (on the event loop): its own connection without an fsync per write.
  // A power loss may cost the last records, whose snapshots then export as whole-tree layers, as before lineage persisted.
  const lineageDb = openWorkerDb(dbPath, { synchronous: 'NORMAL' });
  return new SqliteRetainedRefs(db, lineageDb);
}

class SqliteRetainedRefs implements RetainedRefs {
  private readonly ephemeral = new Map<string, Set<string>>();
  private readonly insert: Statement;
  private readonly del: Statement;
  private readonly ownersOf: Statement;
  private readonly all: Statement;
  readonly lineage: LineageRecords;

  constructor(
    private readonly db: Database,
    private readonly lineageDb: Database,
  ) {
    this.lineage = new SqliteLineageRecords(lineageDb);
    this.insert = db.prepare('INSERT OR IGNORE INTO retained_refs (ref, owner, snapshot_id, created_at) VALUES (?, ?, ?, ?)');
    this.del = db.prepare('DELETE FROM retained_refs WHERE ref = ? AND owner = ?');
    this.ownersOf = db.prepare('SELECT owner FROM retained_refs WHERE ref = ?');
    this.all = db.prepare('SELECT ref, owner, snapshot_id AS snapshotId FROM retained_refs ORDER BY created_at');
  }

  add(ref: string, snapshotId: string, owner: string, ephemeral: boolean): boolean {
    if (this.owners(ref).includes(owner)) return false;
    if (ephemeral) {
      let set = this.ephemeral.get(ref);
      if (!set) this.ephemeral.set(ref, (set = new Set()));
      set.add(owner);
      return true;
    }
    return this.insert.run(ref, owner, snapshotId, Date.now()).changes > 0;
  }

  remove(ref: string, owner: string): boolean {
    const set = this.ephemeral.get(ref);
    if (set?.delete(owner)) {
      if (set.size === 0) this.ephemeral.delete(ref);
      return true;
    }
    return this.del.run(ref, owner).changes > 0;
  }

  owners(ref: string): string[] {
    const rows = this.ownersOf.all(ref) as { owner: string }[];
    return [...rows.map((r) => r.owner), ...(this.ephemeral.get(ref) ?? [])];
  }

  persisted(): { ref: string; snapshotId: string; owner: string }[] {
    return this.all.all() as { ref: string; snapshotId: string; owner: string }[];
  }

  persistedSnapshots(): Set<string> {
    return new Set(this.persisted().map((r) => r.snapshotId));
  }

  close(): void {
    this.lineageDb.close();
    this.db.close();
  }
}
