import { createRequire } from 'node:module';

/** The part of better-sqlite3's API the solver uses (the package ships no types). */
export interface Statement {
  run(...params: unknown[]): { changes: number };
  get(...params: unknown[]): unknown;
  all(...params: unknown[]): unknown[];
}

export interface Database {
  prepare(sql: string): Statement;
  exec(sql: string): void;
  pragma(source: string, options?: { simple?: boolean }): unknown;
  transaction<F extends (...args: never[]) => unknown>(fn: F): F;
  close(): void;
}

const require = createRequire(import.meta.url);

/** Opens (creating) the solver's SQLite database in WAL mode; `:memory:` for a throwaway one. */
export function openSolverDatabase(filename: string): Database {
  const Ctor = require('better-sqlite3') as new (file: string, opts: { timeout: number }) => Database;
  const db = new Ctor(filename, { timeout: 5_000 });
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  return db;
}
