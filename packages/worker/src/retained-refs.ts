import { createRequire } from 'node:module';

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
  close(): void;
}

interface Statement {
  run(...params: unknown[]): { changes: number };
  all(...params: unknown[]): unknown[];
}
interface Database {
  prepare(sql: string): Statement;
  exec(sql: string): void;
  pragma(source: string): unknown;
  close(): void;
}

const require = createRequire(import.meta.url);

/** Retentions persisted in the SQLite file `dbPath` (created when absent); `:memory:` keeps them in memory. */
export function openRetainedRefs(dbPath: string): RetainedRefs {
  const Ctor = require('better-sqlite3') as new (file: string, opts: { timeout: number }) => Database;
  const db = new Ctor(dbPath, { timeout: 5_000 });
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.exec(`CREATE TABLE IF NOT EXISTS retained_refs (
    ref TEXT NOT NULL,
    owner TEXT NOT NULL,
    snapshot_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (ref, owner)
  )`);
  return new SqliteRetainedRefs(db);
}

class SqliteRetainedRefs implements RetainedRefs {
  private readonly ephemeral = new Map<string, Set<string>>();
  private readonly insert: Statement;
  private readonly del: Statement;
  private readonly ownersOf: Statement;
  private readonly all: Statement;

  constructor(private readonly db: Database) {
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
    this.db.close();
  }
}
