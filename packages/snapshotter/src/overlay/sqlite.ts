import { createRequire } from 'node:module';

/**
 * The part of better-sqlite3's API the overlay metadata uses. The package
 * ships no type declarations, so it is loaded through `require` and typed
 * here (as in @kiln/content-store), keeping the types out of this package's
 * public declarations.
 */
export interface Statement<P extends unknown[] = unknown[], R = unknown> {
  run(...params: P): { changes: number; lastInsertRowid: number | bigint };
  get(...params: P): R | undefined;
  all(...params: P): R[];
}

export interface Database {
  prepare<P extends unknown[] = unknown[], R = unknown>(sql: string): Statement<P, R>;
  exec(sql: string): Database;
  pragma(source: string, options?: { simple?: boolean }): unknown;
  transaction<F extends (...args: never[]) => unknown>(fn: F): F;
  close(): Database;
}

interface DatabaseConstructor {
  new (filename: string, options?: { timeout?: number }): Database;
}

const require = createRequire(import.meta.url);

export function openDatabase(filename: string, timeoutMs = 5_000): Database {
  const Ctor = require('better-sqlite3') as DatabaseConstructor;
  return new Ctor(filename, { timeout: timeoutMs });
}

/** better-sqlite3's error code (e.g. "SQLITE_BUSY"), if `err` is one of its errors. */
export function sqliteCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.startsWith('SQLITE_') ? code : undefined;
}
