import { KilnError } from '@kiln/common';
import type { Database } from './sqlite.js';

/**
 * Schema migrations, in order: migration i brings user_version from i to i + 1.
 * Never edit a released migration; append one.
 */
const MIGRATIONS: readonly string[] = [
  // 1: blobs, labels, ingests.
  `CREATE TABLE blobs (
     digest     TEXT PRIMARY KEY,
     size       INTEGER NOT NULL,
     created_at INTEGER NOT NULL -- unix ms
   ) WITHOUT ROWID;
   CREATE TABLE labels (
     digest TEXT NOT NULL REFERENCES blobs(digest) ON DELETE CASCADE,
     key    TEXT NOT NULL,
     value  TEXT NOT NULL,
     PRIMARY KEY (digest, key)
   ) WITHOUT ROWID;
   CREATE INDEX labels_by_key ON labels(key, value);
   CREATE TABLE ingests (
     ref             TEXT PRIMARY KEY,
     id              TEXT NOT NULL UNIQUE, -- sha256 hex of ref: the ingest directory name
     expected_digest TEXT,
     expected_size   INTEGER,
     started_at      INTEGER NOT NULL -- unix ms
   );`,
  // 2: last use (GC policies), resumable ingests, leases.
  `ALTER TABLE blobs ADD COLUMN last_used_at INTEGER NOT NULL DEFAULT 0; -- unix ms
   UPDATE blobs SET last_used_at = created_at;
   ALTER TABLE ingests ADD COLUMN algorithm TEXT NOT NULL DEFAULT 'sha256';
   ALTER TABLE ingests ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0; -- unix ms; the data file's mtime is newer while writing
   UPDATE ingests SET updated_at = started_at;
   CREATE TABLE leases (
     id         TEXT PRIMARY KEY,
     created_at INTEGER NOT NULL,
     expires_at INTEGER, -- unix ms; NULL: never
     labels     TEXT NOT NULL DEFAULT '{}' -- JSON object
   ) WITHOUT ROWID;
   CREATE TABLE lease_resources (
     lease_id TEXT NOT NULL REFERENCES leases(id) ON DELETE CASCADE,
     digest   TEXT NOT NULL, -- need not be a committed blob (yet)
     PRIMARY KEY (lease_id, digest)
   ) WITHOUT ROWID;
   CREATE INDEX lease_resources_by_digest ON lease_resources(digest);`,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

export function migrate(db: Database): void {
  const version = Number(db.pragma('user_version', { simple: true }));
  if (version === SCHEMA_VERSION) return;
  if (version > SCHEMA_VERSION) {
    throw new KilnError(
      'failed_precondition',
      `content store metadata has schema version ${version}, newer than this kiln supports (${SCHEMA_VERSION})`,
    );
  }
  db.transaction(() => {
    for (let v = version; v < SCHEMA_VERSION; v++) db.exec(MIGRATIONS[v] ?? '');
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
  })();
}
