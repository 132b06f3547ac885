import { KilnError, UnavailableError } from '@kiln/common';
import { openDatabase, sqliteCode, type Database } from './sqlite.js';

/** One snapshot as stored: `seq` names its directories, `id` is what callers see. */
export interface SnapshotRow {
  seq: number;
  id: string;
  kind: 'active' | 'committed';
  /** The caller's key while active; null once committed. */
  key: string | null;
  parentSeq: number | null;
  label: string | null;
  /** A merged copy of the whole tree sits in `flat/` (the chain below was too long to mount). */
  flat: boolean;
  /** Removed by the caller; kept while children or readers need its storage. */
  removed: boolean;
  createdAtMs: number;
  /**
   * Whether its files are on disk: `pending` from commit (a volatile overlay
   * never synced them) until a syncfs of the snapshots' file system returned,
   * `failed` if that syncfs reported a write-back error.
   */
  sync: SyncState;
  /** The kernel boot (boot_id) in which a pending snapshot was committed; a crash of that boot may have torn it. */
  bootId: string | null;
}

export type SyncState = 'done' | 'pending' | 'failed';
const SYNC_DB: Record<SyncState, number> = { done: 1, pending: 0, failed: -1 };

interface DbRow {
  seq: number;
  id: string;
  kind: 'active' | 'committed';
  key: string | null;
  parent_seq: number | null;
  label: string | null;
  flat: number;
  removed: number;
  created_at_ms: number;
  sync_state: number;
  boot_id: string | null;
}

const SCHEMA_VERSION = 2;

/**
 * The overlay snapshotter's metadata: a SQLite table of snapshots (WAL,
 * exclusive lock: one process per root), mirrored in memory. Every change
 * goes to the database first, so the mirror never claims what a crash
 * would lose. Not safe for concurrent use from several threads (the
 * snapshotter runs on one event loop).
 */
export class SnapshotMetadata {
  private readonly rows = new Map<number, SnapshotRow>();
  private readonly byId = new Map<string, SnapshotRow>();
  private readonly byKey = new Map<string, SnapshotRow>();
  private readonly children = new Map<number, number>();

  private constructor(private readonly db: Database) {
    for (const r of db.prepare<[], DbRow>('SELECT * FROM snapshots ORDER BY seq').all()) this.track(fromDb(r));
  }

  static open(file: string): SnapshotMetadata {
    // Short lock wait: the lock is only ever held by another snapshotter on this root.
    const db = openDatabase(file, 250);
    try {
      try {
        db.pragma('locking_mode = EXCLUSIVE');
        db.pragma('journal_mode = WAL');
        db.exec('BEGIN IMMEDIATE; COMMIT');
      } catch (err) {
        if (sqliteCode(err) === 'SQLITE_BUSY') throw new UnavailableError(`snapshot metadata ${file} is in use by another process`, { file });
        throw err;
      }
      // NORMAL: in WAL mode a commit survives a killed process; only an OS
      // crash can lose the last ones, and open() then reaps the directories
      // they left without a row. FULL cost an fsync (~4 ms, blocking) per write.
      db.pragma('synchronous = NORMAL');
      migrate(db);
      return new SnapshotMetadata(db);
    } catch (err) {
      db.close();
      throw err;
    }
  }

  close(): void {
    this.db.close();
  }

  all(): SnapshotRow[] {
    return [...this.rows.values()];
  }

  get(seq: number): SnapshotRow | undefined {
    return this.rows.get(seq);
  }

  committed(id: string): SnapshotRow | undefined {
    const r = this.byId.get(id);
    return r && r.kind === 'committed' && !r.removed ? r : undefined;
  }

  active(key: string): SnapshotRow | undefined {
    return this.byKey.get(key);
  }

  byLabel(label: string): SnapshotRow | undefined {
    for (const r of this.rows.values()) if (r.label === label && r.kind === 'committed' && !r.removed) return r;
    return undefined;
  }

  childCount(seq: number): number {
    return this.children.get(seq) ?? 0;
  }

  insertActive(id: string, key: string, parentSeq: number | null, createdAtMs: number): SnapshotRow {
    const res = this.db
      .prepare('INSERT INTO snapshots (id, kind, key, parent_seq, created_at_ms) VALUES (?, ?, ?, ?, ?)')
      .run(id, 'active', key, parentSeq, createdAtMs);
    const row: SnapshotRow = {
      seq: Number(res.lastInsertRowid),
      id,
      kind: 'active',
      key,
      parentSeq,
      label: null,
      flat: false,
      removed: false,
      createdAtMs,
      sync: 'done',
      bootId: null,
    };
    this.track(row);
    return row;
  }

  /** Commits `row` with its files not yet synced (written in boot `bootId`). */
  markCommitted(row: SnapshotRow, label: string | null, bootId: string): void {
    try {
      this.db
        .prepare("UPDATE snapshots SET kind = 'committed', key = NULL, label = ?, sync_state = 0, boot_id = ? WHERE seq = ?")
        .run(label, bootId, row.seq);
    } catch (err) {
      if (sqliteCode(err) === 'SQLITE_CONSTRAINT_UNIQUE') {
        throw new KilnError('already_exists', `a committed snapshot is already labeled ${label}`, {}, { cause: err });
      }
      throw err;
    }
    if (row.key !== null) this.byKey.delete(row.key);
    row.kind = 'committed';
    row.key = null;
    row.label = label;
    row.sync = 'pending';
    row.bootId = bootId;
  }

  /** Records the outcome of a syncfs for rows committed before it started (one transaction). */
  markSync(rows: readonly SnapshotRow[], state: SyncState): void {
    const live = rows.filter((r) => this.rows.get(r.seq) === r);
    if (live.length === 0) return;
    const update = this.db.prepare('UPDATE snapshots SET sync_state = ? WHERE seq = ?');
    this.db.transaction(() => {
      for (const r of live) update.run(SYNC_DB[state], r.seq);
    })();
    for (const r of live) r.sync = state;
  }

  markFlat(row: SnapshotRow, flat: boolean): void {
    this.db.prepare('UPDATE snapshots SET flat = ? WHERE seq = ?').run(flat ? 1 : 0, row.seq);
    row.flat = flat;
  }

  markRemoved(row: SnapshotRow): void {
    // The label goes with the removal: a new snapshot may take it at once.
    this.db.prepare('UPDATE snapshots SET removed = 1, label = NULL WHERE seq = ?').run(row.seq);
    row.removed = true;
    row.label = null;
  }

  delete(row: SnapshotRow): void {
    this.db.prepare('DELETE FROM snapshots WHERE seq = ?').run(row.seq);
    this.rows.delete(row.seq);
    this.byId.delete(row.id);
    if (row.key !== null && this.byKey.get(row.key) === row) this.byKey.delete(row.key);
    if (row.parentSeq !== null) {
      const n = (this.children.get(row.parentSeq) ?? 1) - 1;
      if (n > 0) this.children.set(row.parentSeq, n);
      else this.children.delete(row.parentSeq);
    }
  }

  private track(row: SnapshotRow): void {
    this.rows.set(row.seq, row);
    this.byId.set(row.id, row);
    if (row.key !== null) this.byKey.set(row.key, row);
    if (row.parentSeq !== null) this.children.set(row.parentSeq, (this.children.get(row.parentSeq) ?? 0) + 1);
  }
}

function fromDb(r: DbRow): SnapshotRow {
  return {
    seq: r.seq,
    id: r.id,
    kind: r.kind,
    key: r.key,
    parentSeq: r.parent_seq,
    label: r.label,
    flat: r.flat !== 0,
    removed: r.removed !== 0,
    createdAtMs: r.created_at_ms,
    sync: r.sync_state === 1 ? 'done' : r.sync_state === 0 ? 'pending' : 'failed',
    bootId: r.boot_id,
  };
}

function migrate(db: Database): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > SCHEMA_VERSION) {
    throw new KilnError('failed_precondition', `snapshot metadata has schema version ${version}; this kiln knows up to ${SCHEMA_VERSION}`);
  }
  if (version === SCHEMA_VERSION) return;
  if (version === 1) {
    // Rows of version 1 were committed by an unmount that synced them.
    db.exec(`
      ALTER TABLE snapshots ADD COLUMN sync_state INTEGER NOT NULL DEFAULT 1;
      ALTER TABLE snapshots ADD COLUMN boot_id TEXT;
      PRAGMA user_version = ${SCHEMA_VERSION};
    `);
    return;
  }
  db.exec(`
    CREATE TABLE snapshots (
      seq INTEGER PRIMARY KEY AUTOINCREMENT,
      id TEXT NOT NULL UNIQUE,
      kind TEXT NOT NULL CHECK (kind IN ('active', 'committed')),
      key TEXT UNIQUE,
      parent_seq INTEGER REFERENCES snapshots (seq),
      label TEXT UNIQUE,
      flat INTEGER NOT NULL DEFAULT 0,
      removed INTEGER NOT NULL DEFAULT 0,
      created_at_ms INTEGER NOT NULL,
      sync_state INTEGER NOT NULL DEFAULT 1,
      boot_id TEXT
    );
    PRAGMA user_version = ${SCHEMA_VERSION};
  `);
}
