import type { Database, Statement } from '../cache/sqlite.js';
import type { PreviousBuild } from './explain-miss.js';
import type { StepRecord } from './step-record.js';

/** One step's cache-miss explanation, as `history explain` shows it. */
export interface MissRecord {
  vertex: string;
  name: string;
  reason: string;
}

export interface StepStoreOptions {
  /** Bytes of step records kept per build (default 2 MiB): past it the context file lists are dropped, then the records. */
  maxBytes?: number;
}

/**
 * Per build, the step records of its cache keys and the explanations of
 * its misses, in the solver's SQLite database (table `build_steps`, one row
 * per build, keyed by the history ref). `identity` names the Dockerfile,
 * context and target (see buildIdentity), so the closest earlier build is
 * the newest row with the same identity. Rows follow the build history:
 * `pruneOrphans` drops those whose history record is gone.
 */
export class StepStore {
  private readonly maxBytes: number;
  private readonly stmts: Record<'save' | 'previous' | 'misses', Statement>;
  private prune: Statement | undefined;

  constructor(private readonly db: Database, opts: StepStoreOptions = {}) {
    this.maxBytes = opts.maxBytes ?? 2 << 20;
    db.exec(`CREATE TABLE IF NOT EXISTS build_steps (
      ref TEXT PRIMARY KEY,
      identity TEXT NOT NULL,
      steps TEXT NOT NULL,
      misses TEXT NOT NULL
    )`);
    db.exec('CREATE INDEX IF NOT EXISTS build_steps_identity ON build_steps (identity)');
    this.stmts = {
      save: db.prepare('INSERT OR REPLACE INTO build_steps (ref, identity, steps, misses) VALUES (?, ?, ?, ?)'),
      previous: db.prepare('SELECT ref, steps FROM build_steps WHERE identity = ? AND ref != ? ORDER BY rowid DESC LIMIT 1'),
      misses: db.prepare('SELECT misses FROM build_steps WHERE ref = ?'),
    };
  }

  save(ref: string, identity: string, steps: readonly StepRecord[], misses: readonly MissRecord[]): void {
    let json = JSON.stringify(steps);
    if (json.length > this.maxBytes) json = JSON.stringify(steps.map(({ files: _files, ...s }) => s));
    if (json.length > this.maxBytes) json = '[]';
    // Saving again (a build retried on another worker) moves the row to the end: rowid orders builds.
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM build_steps WHERE ref = ?').run(ref);
      this.stmts.save.run(ref, identity, json, JSON.stringify(misses));
    })();
  }

  /** The explained misses of an imported build; its identity is its own, so no later build compares against it. */
  saveImportedMisses(ref: string, misses: readonly MissRecord[]): void {
    this.save(ref, `imported:${ref}`, [], misses.map(({ vertex, name, reason }) => ({ vertex, name, reason })));
  }

  /** The newest other build with this identity, or undefined. */
  previous(identity: string, ref: string): PreviousBuild | undefined {
    const row = this.stmts.previous.get(identity, ref) as { ref: string; steps: string } | undefined;
    if (!row) return undefined;
    const steps = JSON.parse(row.steps) as StepRecord[];
    return { ref: row.ref, steps: new Map(steps.map((s) => [s.digest, s])) };
  }

  /** A build's explained misses ([] when none were recorded). */
  misses(ref: string): MissRecord[] {
    const row = this.stmts.misses.get(ref) as { misses: string } | undefined;
    return row ? (JSON.parse(row.misses) as MissRecord[]) : [];
  }

  /** Drops the rows of builds the history no longer has (trimmed or deleted). */
  pruneOrphans(): void {
    // Prepared on first use: the history's table may be created after this store.
    (this.prune ??= this.db.prepare('DELETE FROM build_steps WHERE ref NOT IN (SELECT ref FROM build_history)')).run();
  }
}
