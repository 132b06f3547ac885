import type { Database, Statement } from './sqlite.js';

/** One persisted solver cache entry: a vertex cache key and the worker refs holding its result. */
export interface CacheRecord {
  key: string;
  workerId: string;
  /** One ref per op output, retained on the worker under the owner CACHE_OWNER. */
  refs: string[];
  description: string;
  createdAtMs: number;
  lastUsedAtMs: number;
  usageCount: number;
  /**
   * How long producing the result took when it ran (ms); null when unknown
   * (records from before it was kept, results taken from an imported cache).
   * A result pulled to another worker keeps it: what pulling must beat.
   */
  runMs: number | null;
  /** The content-store lease keeping the layer blobs of a result pulled from another worker or imported from a cache (`--cache-from`: its layers are read from them); null otherwise. */
  lease: string | null;
}

/** The worker retention owner of every ref the cache holds. */
export const CACHE_OWNER = 'solver-cache';

/**
 * The solver cache's records in SQLite (table `cache_records`). All methods
 * are synchronous; the database is owned by the caller.
 */
export class CacheStore {
  private readonly getStmt: Statement;
  private readonly putStmt: Statement;
  private readonly touchStmt: Statement;
  private readonly delStmt: Statement;
  private readonly listStmt: Statement;

  constructor(private readonly db: Database, private readonly now: () => number = Date.now) {
    db.exec(`CREATE TABLE IF NOT EXISTS cache_records (
      key TEXT PRIMARY KEY,
      worker_id TEXT NOT NULL,
      refs TEXT NOT NULL,
      description TEXT NOT NULL,
      created_at INTEGER NOT NULL,
      last_used_at INTEGER NOT NULL,
      usage_count INTEGER NOT NULL
    )`);
    // Added after the table first shipped: databases made before it gain the column.
    const columns = db.prepare('PRAGMA table_info(cache_records)').all() as { name: string }[];
    if (!columns.some((c) => c.name === 'run_ms')) db.exec('ALTER TABLE cache_records ADD COLUMN run_ms INTEGER');
    if (!columns.some((c) => c.name === 'lease')) db.exec('ALTER TABLE cache_records ADD COLUMN lease TEXT');
    const cols = 'key, worker_id AS workerId, refs, description, created_at AS createdAtMs, last_used_at AS lastUsedAtMs, usage_count AS usageCount, run_ms AS runMs, lease';
    this.getStmt = db.prepare(`SELECT ${cols} FROM cache_records WHERE key = ?`);
    this.listStmt = db.prepare(`SELECT ${cols} FROM cache_records ORDER BY last_used_at DESC`);
    this.putStmt = db.prepare(
      `INSERT INTO cache_records (key, worker_id, refs, description, created_at, last_used_at, usage_count, run_ms, lease) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?)
       ON CONFLICT(key) DO UPDATE SET worker_id = excluded.worker_id, refs = excluded.refs, description = excluded.description,
         last_used_at = excluded.last_used_at, usage_count = usage_count + 1, run_ms = excluded.run_ms, lease = excluded.lease`,
    );
    this.touchStmt = db.prepare('UPDATE cache_records SET last_used_at = ?, usage_count = usage_count + 1 WHERE key = ?');
    this.delStmt = db.prepare('DELETE FROM cache_records WHERE key = ?');
  }

  get(key: string): CacheRecord | undefined {
    const row = this.getStmt.get(key) as (Omit<CacheRecord, 'refs'> & { refs: string }) | undefined;
    return row && { ...row, refs: JSON.parse(row.refs) as string[] };
  }

  /** Stores (or replaces) the result of `key`; returns the record it replaced. See CacheRecord for `runMs` and `lease`. */
  put(key: string, workerId: string, refs: string[], description: string, extra: { runMs?: number | null; lease?: string | null } = {}): CacheRecord | undefined {
    const old = this.get(key);
    const now = this.now();
    const runMs = extra.runMs ?? null;
    this.putStmt.run(key, workerId, JSON.stringify(refs), description, now, now, runMs === null ? null : Math.round(runMs), extra.lease ?? null);
    return old;
  }

  /** Counts one more use of `key` now. */
  touch(key: string): void {
    this.touchStmt.run(this.now(), key);
  }

  delete(key: string): void {
    this.delStmt.run(key);
  }

  /**
   * How many of `keys` each worker holds (the cluster's cache index:
   * a key's record names the one worker its result lives on).
   */
  countByWorker(keys: readonly string[]): Map<string, number> {
    const counts = new Map<string, number>();
    const unique = [...new Set(keys)];
    // SQLite binds at most 32766 parameters a statement; chunks stay well below.
    for (let i = 0; i < unique.length; i += 500) {
      const chunk = unique.slice(i, i + 500);
      const rows = this.db.prepare(`SELECT worker_id AS workerId, COUNT(*) AS n FROM cache_records WHERE key IN (${chunk.map(() => '?').join(',')}) GROUP BY worker_id`).all(...chunk) as { workerId: string; n: number }[];
      for (const r of rows) counts.set(r.workerId, (counts.get(r.workerId) ?? 0) + r.n);
    }
    return counts;
  }

  /** The records of those of `keys` the cache holds. */
  getMany(keys: readonly string[]): CacheRecord[] {
    const unique = [...new Set(keys)];
    const out: CacheRecord[] = [];
    for (let i = 0; i < unique.length; i += 500) {
      const chunk = unique.slice(i, i + 500);
      const cols = 'key, worker_id AS workerId, refs, description, created_at AS createdAtMs, last_used_at AS lastUsedAtMs, usage_count AS usageCount, run_ms AS runMs, lease';
      const rows = this.db.prepare(`SELECT ${cols} FROM cache_records WHERE key IN (${chunk.map(() => '?').join(',')})`).all(...chunk) as (Omit<CacheRecord, 'refs'> & { refs: string })[];
      for (const r of rows) out.push({ ...r, refs: JSON.parse(r.refs) as string[] });
    }
    return out;
  }

  /** Every record, most recently used first. */
  list(): CacheRecord[] {
    return (this.listStmt.all() as (Omit<CacheRecord, 'refs'> & { refs: string })[]).map((r) => ({ ...r, refs: JSON.parse(r.refs) as string[] }));
  }
}
