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

export function openDatabase(filename: string): Database {
  const Ctor = require('better-sqlite3') as DatabaseConstructor;
  return new Ctor(filename, { timeout: 5_000 });
}
