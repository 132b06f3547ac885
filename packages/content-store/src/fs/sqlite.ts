import { createRequire } from 'node:module';

/**
 * The part of better-sqlite3's API this package uses. The package ships no
 * type declarations (and @types/better-sqlite3 is not installed), so it is
 * loaded through `require` and typed here; keeping the types local also keeps
 * them out of this package's public declarations.
 */
export interface RunResult {
  changes: number;
  lastInsertRowid: number | bigint;
}

export interface Statement<P extends unknown[] = unknown[], R = unknown> {
  run(...params: P): RunResult;
  get(...params: P): R | undefined;
  all(...params: P): R[];
  /** Binds parameters for good; the statement then runs with no arguments. */
  bind(...params: P): Statement<[], R>;
}

export interface Database {
  readonly open: boolean;
  prepare<P extends unknown[] = unknown[], R = unknown>(sql: string): Statement<P, R>;
  exec(sql: string): Database;
  pragma(source: string, options?: { simple?: boolean }): unknown;
  transaction<F extends (...args: never[]) => unknown>(fn: F): F;
  close(): Database;
}

interface DatabaseConstructor {
  new (filename: string, options?: { timeout?: number; readonly?: boolean; fileMustExist?: boolean }): Database;
}

const require = createRequire(import.meta.url);

/** Opens `filename`; `timeoutMs` is how long a statement waits for a lock held elsewhere. */
export function openDatabase(filename: string, timeoutMs = 5_000): Database {
  const Ctor = require('better-sqlite3') as DatabaseConstructor;
  return new Ctor(filename, { timeout: timeoutMs });
}

/** better-sqlite3's error code (e.g. "SQLITE_BUSY"), if `err` is one of its errors. */
export function sqliteCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.startsWith('SQLITE_') ? code : undefined;
}
