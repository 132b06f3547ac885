import { createHash } from 'node:crypto';
import { mkdir, open, readdir, rename, rm, stat, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import {
  CanceledError,
  InvalidArgumentError,
  isDigest,
  KilnError,
  NotFoundError,
  silentLogger,
  UnavailableError,
  type Digest,
  type Logger,
} from '@kiln/common';
import type {
  BlobInfo,
  ContentStore,
  Labels,
  ListOptions,
  ReadOptions,
  WriteOptions,
  WriteRequest,
  WriteResult,
} from '../content-store.js';
import { compileFilters } from './filters.js';
import { KeyedMutex } from './keyed-mutex.js';
import { openDatabase, type Database, type Statement } from './sqlite.js';

export interface LocalContentStoreOptions {
  /**
   * Directory owned by this store (created if missing): `blobs/sha256/<hex>`,
   * `ingest/<id>/data` and `metadata.db`. One process at a time may open it.
   */
  root: string;
  logger?: Logger;
}

/** Chunk size of `read`. */
const READ_CHUNK = 256 * 1024;
/** Rows fetched per `list` query; no statement stays open across a yield. */
const LIST_PAGE = 256;
/** Longest ref accepted, in characters. */
const MAX_REF_LENGTH = 4096;
/** Longest label (key + value), in bytes, as in containerd. */
const MAX_LABEL_BYTES = 4096;
const HEX_RE = /^[a-f0-9]{64}$/;
const SCHEMA_VERSION = 1;

const SCHEMA = `
CREATE TABLE blobs (
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
);
`;

const INFO_COLUMNS = `b.digest, b.size, b.created_at,
  (SELECT json_group_object(l.key, l.value) FROM labels l WHERE l.digest = b.digest) AS labels`;

interface BlobRow {
  digest: string;
  size: number;
  created_at: number;
  labels: string | null;
}

/**
 * Opens (creating if needed) a content store on the local filesystem and
 * recovers from a crash of its previous owner:
 * - ingest directories with no ingest row are removed, ingest rows whose
 *   data file is gone are dropped;
 * - blob files with no metadata row are registered (size from stat,
 *   creation time from mtime), rows whose blob file is gone are dropped.
 */
export async function openLocalContentStore(options: LocalContentStoreOptions): Promise<ContentStore> {
  const logger = (options.logger ?? silentLogger()).child({ component: 'content-store' });
  const root = options.root;
  if (typeof root !== 'string' || root === '') throw new InvalidArgumentError('content store root must be a directory path', 'root');
  const blobDir = join(root, 'blobs', 'sha256');
  const ingestDir = join(root, 'ingest');
  await mkdir(blobDir, { recursive: true });
  await mkdir(ingestDir, { recursive: true });

  const db = openDatabase(join(root, 'metadata.db'));
  try {
    db.pragma('journal_mode = WAL');
    // FULL: labels (GC roots, later) must survive a power loss, not only a crash.
    db.pragma('synchronous = FULL');
    db.pragma('foreign_keys = ON');
    migrate(db);
    const store = new LocalContentStore(root, blobDir, ingestDir, db, logger);
    await store.recover();
    return store;
  } catch (err) {
    db.close();
    throw err;
  }
}

function migrate(db: Database): void {
  const version = Number(db.pragma('user_version', { simple: true }));
  if (version === SCHEMA_VERSION) return;
  if (version > SCHEMA_VERSION) {
    throw new KilnError(
      'failed_precondition',
      `content store metadata has schema version ${version}, newer than this kiln supports (${SCHEMA_VERSION})`,
    );
  }
  db.transaction(() => {
    db.exec(SCHEMA);
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
  })();
}

class LocalContentStore implements ContentStore {
  private readonly digestLocks = new KeyedMutex();
  private readonly activeRefs = new Set<string>();
  private readonly inflight = new Set<Promise<unknown>>();
  private readonly closing = new AbortController();
  private closePromise: Promise<void> | undefined;

  private readonly stmt: {
    info: Statement<[string], BlobRow>;
    allDigests: Statement<[], { digest: string }>;
    upsertBlob: Statement<[string, number, number]>;
    deleteBlob: Statement<[string]>;
    setLabel: Statement<[string, string, string]>;
    deleteLabel: Statement<[string, string]>;
    upsertIngest: Statement<[string, string, string | null, number | null, number]>;
    deleteIngest: Statement<[string]>;
    allIngests: Statement<[], { ref: string; id: string }>;
  };

  constructor(
    private readonly root: string,
    private readonly blobDir: string,
    private readonly ingestDir: string,
    private readonly db: Database,
    private readonly logger: Logger,
  ) {
    this.stmt = {
      info: db.prepare(`SELECT ${INFO_COLUMNS} FROM blobs b WHERE b.digest = ?`),
      allDigests: db.prepare('SELECT digest FROM blobs'),
      upsertBlob: db.prepare(
        'INSERT INTO blobs (digest, size, created_at) VALUES (?, ?, ?) ON CONFLICT (digest) DO UPDATE SET size = excluded.size',
      ),
      deleteBlob: db.prepare('DELETE FROM blobs WHERE digest = ?'),
      setLabel: db.prepare(
        'INSERT INTO labels (digest, key, value) VALUES (?, ?, ?) ON CONFLICT (digest, key) DO UPDATE SET value = excluded.value',
      ),
      deleteLabel: db.prepare('DELETE FROM labels WHERE digest = ? AND key = ?'),
      upsertIngest: db.prepare(
        `INSERT INTO ingests (ref, id, expected_digest, expected_size, started_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (ref) DO UPDATE SET expected_digest = excluded.expected_digest,
           expected_size = excluded.expected_size, started_at = excluded.started_at`,
      ),
      deleteIngest: db.prepare('DELETE FROM ingests WHERE ref = ?'),
      allIngests: db.prepare('SELECT ref, id FROM ingests'),
    };
  }

  // ---- ContentStore ----

  async info(digest: string): Promise<BlobInfo> {
    this.ensureOpen();
    const d = parseSha256(digest);
    const row = this.stmt.info.get(d.digest);
    if (!row) throw notFound(d.digest);
    return toBlobInfo(row);
  }

  async *read(digest: string, options: ReadOptions = {}): AsyncGenerator<Uint8Array> {
    this.ensureOpen();
    const d = parseSha256(digest);
    const offset = options.offset ?? 0;
    checkByteCount(offset, 'offset');
    if (options.size !== undefined) checkByteCount(options.size, 'size');
    const signal = options.signal;
    checkAborted(signal);

    let fh: FileHandle;
    try {
      fh = await open(this.blobPath(d.hex), 'r');
    } catch (err) {
      if (isErrno(err, 'ENOENT')) throw notFound(d.digest);
      throw err;
    }
    try {
      const { size: total } = await fh.stat();
      if (offset > total) {
        throw new InvalidArgumentError(`offset ${offset} is past the end of ${d.digest} (${total} bytes)`, 'offset');
      }
      const end = options.size === undefined ? total : Math.min(total, offset + options.size);
      let pos = offset;
      while (pos < end) {
        checkAborted(signal);
        const want = Math.min(READ_CHUNK, end - pos);
        const buf = Buffer.allocUnsafeSlow(want);
        const { bytesRead } = await fh.read(buf, 0, want, pos);
        if (bytesRead === 0) throw new KilnError('internal', `blob ${d.digest} ended at ${pos} bytes, ${total} expected`);
        pos += bytesRead;
        yield bytesRead === want ? buf : buf.subarray(0, bytesRead);
      }
    } finally {
      await fh.close();
    }
  }

  write(request: WriteRequest, data: AsyncIterable<Uint8Array>, options: WriteOptions = {}): Promise<WriteResult> {
    return this.track(async () => {
      const req = validateWriteRequest(request);
      const signal = options.signal ? AbortSignal.any([options.signal, this.closing.signal]) : this.closing.signal;
      checkAborted(signal);
      if (req.expected) {
        const existing = await this.commitIfPresent(req, req.expected);
        if (existing) return existing;
      }
      if (this.activeRefs.has(req.ref)) {
        throw new UnavailableError(`ingest ref ${quote(req.ref)} is already being written`, { ref: req.ref });
      }
      this.activeRefs.add(req.ref);
      try {
        return await this.ingest(req, data, signal);
      } finally {
        this.activeRefs.delete(req.ref);
      }
    });
  }

  delete(digest: string): Promise<void> {
    return this.track(async () => {
      const d = parseSha256(digest);
      await this.digestLocks.run(d.hex, async () => {
        const row = this.stmt.info.get(d.digest);
        let removed = false;
        try {
          await unlink(this.blobPath(d.hex));
          removed = true;
        } catch (err) {
          if (!isErrno(err, 'ENOENT')) throw err;
        }
        if (!row && !removed) throw notFound(d.digest);
        this.stmt.deleteBlob.run(d.digest);
        this.logger.debug({ digest: d.digest }, 'blob deleted');
      });
    });
  }

  async *list(filters: readonly string[] = [], options: ListOptions = {}): AsyncGenerator<BlobInfo> {
    this.ensureOpen();
    const where = compileFilters(filters);
    const page = this.db.prepare<string[], BlobRow>(
      `SELECT ${INFO_COLUMNS} FROM blobs b WHERE b.digest > ?${where.sql} ORDER BY b.digest LIMIT ${LIST_PAGE}`,
    );
    let after = '';
    for (;;) {
      checkAborted(options.signal);
      this.ensureOpen();
      const rows = page.all(after, ...where.params);
      for (const row of rows) {
        checkAborted(options.signal);
        yield toBlobInfo(row);
      }
      const last = rows[rows.length - 1];
      if (rows.length < LIST_PAGE || !last) return;
      after = last.digest;
    }
  }

  updateLabels(digest: string, labels: Labels): Promise<BlobInfo> {
    return this.track(async () => {
      const d = parseSha256(digest);
      const valid = validateLabels(labels);
      return this.digestLocks.run(d.hex, async () => {
        const row = this.db.transaction(() => {
          if (!this.stmt.info.get(d.digest)) throw notFound(d.digest);
          this.mergeLabels(d.digest, valid);
          return this.stmt.info.get(d.digest);
        })();
        if (!row) throw notFound(d.digest);
        return toBlobInfo(row);
      });
    });
  }

  close(): Promise<void> {
    if (!this.closePromise) {
      this.closing.abort(new CanceledError('content store is closing'));
      this.closePromise = (async () => {
        while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
        this.db.close();
      })();
    }
    return this.closePromise;
  }

  // ---- recovery ----

  /** Reconciles the directories with the metadata after an unclean stop. */
  async recover(): Promise<void> {
    let ingestsRemoved = 0;
    let ingestRowsDropped = 0;
    let blobsRegistered = 0;
    let blobRowsDropped = 0;

    const ingests = this.stmt.allIngests.all();
    const ingestIds = new Set(ingests.map((r) => r.id));
    for (const entry of await readdir(this.ingestDir)) {
      if (ingestIds.has(entry)) continue;
      await rm(join(this.ingestDir, entry), { recursive: true, force: true });
      ingestsRemoved++;
    }
    for (const row of ingests) {
      if (!(await fileExists(this.ingestDataPath(row.id)))) {
        await rm(join(this.ingestDir, row.id), { recursive: true, force: true });
        this.stmt.deleteIngest.run(row.ref);
        ingestRowsDropped++;
      }
    }

    const files = new Set<string>();
    for (const entry of await readdir(this.blobDir, { withFileTypes: true })) {
      if (!HEX_RE.test(entry.name) || !entry.isFile()) {
        this.logger.warn({ path: join(this.blobDir, entry.name) }, 'ignoring unexpected entry in blob directory');
        continue;
      }
      files.add(entry.name);
    }
    const rows = new Set(this.stmt.allDigests.all().map((r) => r.digest));
    for (const hex of files) {
      const digest = `sha256:${hex}`;
      if (rows.has(digest)) continue;
      const st = await stat(this.blobPath(hex));
      this.stmt.upsertBlob.run(digest, st.size, Math.round(st.mtimeMs));
      this.logger.warn({ digest, size: st.size }, 'registered blob found without metadata');
      blobsRegistered++;
    }
    for (const digest of rows) {
      if (files.has(digest.slice('sha256:'.length))) continue;
      this.stmt.deleteBlob.run(digest);
      this.logger.warn({ digest }, 'dropped metadata of missing blob');
      blobRowsDropped++;
    }

    this.logger.info(
      { root: this.root, blobs: files.size, ingestsRemoved, ingestRowsDropped, blobsRegistered, blobRowsDropped },
      'content store opened',
    );
  }

  // ---- write internals ----

  /** If the expected blob is committed: checks its size, merges labels, returns it. */
  private async commitIfPresent(req: ValidWriteRequest, expected: Sha256): Promise<WriteResult | undefined> {
    return this.digestLocks.run(expected.hex, async () => {
      const row = this.stmt.info.get(expected.digest);
      if (!row) return undefined;
      const st = await statOrUndefined(this.blobPath(expected.hex));
      if (!st?.isFile() || st.size !== row.size) return undefined;
      if (req.expectedSize !== undefined && req.expectedSize !== row.size) {
        throw sizeMismatch(req.ref, req.expectedSize, row.size);
      }
      this.db.transaction(() => this.mergeLabels(expected.digest, req.labels))();
      this.logger.debug({ digest: expected.digest, ref: req.ref }, 'write skipped: blob exists');
      return { digest: expected.digest, size: row.size };
    });
  }

  private async ingest(req: ValidWriteRequest, data: AsyncIterable<Uint8Array>, signal: AbortSignal): Promise<WriteResult> {
    const id = createHash('sha256').update(req.ref).digest('hex');
    const dir = join(this.ingestDir, id);
    const dataPath = this.ingestDataPath(id);
    this.stmt.upsertIngest.run(req.ref, id, req.expected?.digest ?? null, req.expectedSize ?? null, Date.now());

    const it = data[Symbol.asyncIterator]();
    let drained = false;
    let committed = false;
    let fh: FileHandle | undefined;
    try {
      await mkdir(dir, { recursive: true });
      fh = await open(dataPath, 'w');
      const hash = createHash('sha256');
      let size = 0;
      for (;;) {
        const next = await nextOrAbort(it, signal);
        if (next.done) {
          drained = true;
          break;
        }
        const chunk: unknown = next.value;
        if (!(chunk instanceof Uint8Array)) throw new InvalidArgumentError('write data must be Uint8Array chunks', 'data');
        if (chunk.byteLength === 0) continue;
        size += chunk.byteLength;
        if (req.expectedSize !== undefined && size > req.expectedSize) {
          throw sizeMismatch(req.ref, req.expectedSize, size, true);
        }
        hash.update(chunk);
        await writeAll(fh, chunk);
      }
      checkAborted(signal);
      if (req.expectedSize !== undefined && size !== req.expectedSize) throw sizeMismatch(req.ref, req.expectedSize, size);
      const digest: Digest = `sha256:${hash.digest('hex')}`;
      if (req.expected && digest !== req.expected.digest) {
        throw new KilnError(
          'failed_precondition',
          `digest mismatch for ingest ref ${quote(req.ref)}: expected ${req.expected.digest}, got ${digest}`,
          { ref: req.ref, expected: req.expected.digest, actual: digest },
        );
      }
      await fh.sync();
      await fh.close();
      fh = undefined;
      checkAborted(signal);
      await this.commit(req, { digest, hex: digest.slice('sha256:'.length) }, size, dataPath);
      committed = true;
      return { digest, size };
    } finally {
      if (!drained) {
        // Stop the producer; do not wait for it (it may be stuck, which is why we stopped).
        Promise.resolve()
          .then(() => it.return?.())
          .catch(() => {});
      }
      if (fh) await fh.close().catch(() => {});
      await rm(dir, { recursive: true, force: true }).catch((err: unknown) =>
        this.logger.warn({ err, ref: req.ref }, 'could not remove ingest directory'),
      );
      if (!committed) this.stmt.deleteIngest.run(req.ref);
    }
  }

  /** Moves a verified ingest file into place and records it (and its labels). */
  private async commit(req: ValidWriteRequest, d: Sha256, size: number, dataPath: string): Promise<void> {
    await this.digestLocks.run(d.hex, async () => {
      const path = this.blobPath(d.hex);
      const st = await statOrUndefined(path);
      if (st?.isFile() && st.size === size) {
        this.logger.debug({ digest: d.digest, ref: req.ref }, 'blob already present');
      } else {
        await rename(dataPath, path);
        await fsyncDir(this.blobDir);
      }
      this.db.transaction(() => {
        this.stmt.upsertBlob.run(d.digest, size, Date.now());
        this.mergeLabels(d.digest, req.labels);
        this.stmt.deleteIngest.run(req.ref);
      })();
      this.logger.debug({ digest: d.digest, size, ref: req.ref }, 'blob committed');
    });
  }

  /** Call inside a transaction. */
  private mergeLabels(digest: string, labels: Labels): void {
    for (const [key, value] of Object.entries(labels)) {
      if (value === '') this.stmt.deleteLabel.run(digest, key);
      else this.stmt.setLabel.run(digest, key, value);
    }
  }

  // ---- helpers ----

  /** Runs a mutating operation that `close` waits for. */
  private track<T>(op: () => Promise<T>): Promise<T> {
    let p: Promise<T>;
    try {
      this.ensureOpen();
      p = op();
    } catch (err) {
      return Promise.reject(err);
    }
    this.inflight.add(p);
    const forget = () => this.inflight.delete(p);
    p.then(forget, forget);
    return p;
  }

  private ensureOpen(): void {
    if (this.closePromise) throw new UnavailableError('content store is closed');
  }

  /** Only ever called with a validated 64-hex string. */
  private blobPath(hex: string): string {
    return join(this.blobDir, hex);
  }

  /** `id` is the sha256 hex of a ref, never the ref itself. */
  private ingestDataPath(id: string): string {
    return join(this.ingestDir, id, 'data');
  }
}

// ---- validation ----

interface Sha256 {
  digest: Digest;
  hex: string;
}

interface ValidWriteRequest {
  ref: string;
  expected: Sha256 | undefined;
  expectedSize: number | undefined;
  labels: Labels;
}

function parseSha256(value: string, field = 'digest'): Sha256 {
  if (typeof value !== 'string' || !isDigest(value)) throw new InvalidArgumentError(`invalid digest ${quote(value)}`, field);
  if (!value.startsWith('sha256:')) {
    throw new InvalidArgumentError(`unsupported digest ${value}: the content store keeps sha256 digests only`, field);
  }
  return { digest: value, hex: value.slice('sha256:'.length) };
}

function validateWriteRequest(req: WriteRequest): ValidWriteRequest {
  const { ref } = req;
  if (typeof ref !== 'string' || ref === '') throw new InvalidArgumentError('write needs a non-empty ingest ref', 'ref');
  if (ref.length > MAX_REF_LENGTH) throw new InvalidArgumentError(`ingest ref longer than ${MAX_REF_LENGTH} characters`, 'ref');
  const expected = req.expectedDigest === undefined ? undefined : parseSha256(req.expectedDigest, 'expectedDigest');
  if (req.expectedSize !== undefined) checkByteCount(req.expectedSize, 'expectedSize');
  return { ref, expected, expectedSize: req.expectedSize, labels: validateLabels(req.labels) };
}

function validateLabels(labels: Labels | undefined): Labels {
  if (labels === undefined) return {};
  if (typeof labels !== 'object' || labels === null || Array.isArray(labels)) {
    throw new InvalidArgumentError('labels must be an object of strings', 'labels');
  }
  const out: Labels = {};
  for (const [key, value] of Object.entries(labels)) {
    if (key === '') throw new InvalidArgumentError('label keys must not be empty', 'labels');
    if (typeof value !== 'string') throw new InvalidArgumentError(`label ${quote(key)} must have a string value`, 'labels');
    if (Buffer.byteLength(key) + Buffer.byteLength(value) > MAX_LABEL_BYTES) {
      throw new InvalidArgumentError(`label ${quote(key)} is longer than ${MAX_LABEL_BYTES} bytes`, 'labels');
    }
    Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

function checkByteCount(n: number, field: string): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError(`${field} must be a non-negative integer, got ${n}`, field);
}

// ---- errors ----

function notFound(digest: Digest): NotFoundError {
  return new NotFoundError(`blob ${digest} not found`, { digest });
}

function sizeMismatch(ref: string, expected: number, actual: number, more = false): KilnError {
  return new KilnError(
    'failed_precondition',
    `size mismatch for ingest ref ${quote(ref)}: expected ${expected} bytes, got ${more ? 'more than ' : ''}${more ? expected : actual}`,
    { ref, expectedSize: expected, actualSize: actual },
  );
}

function quote(value: unknown): string {
  const s = typeof value === 'string' ? value : String(value);
  return JSON.stringify(s.length > 200 ? `${s.slice(0, 200)}...` : s);
}

function checkAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw canceled(signal);
}

function canceled(signal: AbortSignal): CanceledError {
  const reason: unknown = signal.reason;
  if (reason instanceof CanceledError) return reason;
  return new CanceledError(reason instanceof Error ? reason.message : reason ? String(reason) : 'operation canceled');
}

// ---- fs helpers ----

/** `it.next()`, or a CanceledError as soon as `signal` aborts, whichever comes first. */
async function nextOrAbort<T>(it: AsyncIterator<T>, signal: AbortSignal): Promise<IteratorResult<T>> {
  checkAborted(signal);
  let onAbort!: () => void;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(canceled(signal));
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([it.next(), aborted]);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

async function writeAll(fh: FileHandle, chunk: Uint8Array): Promise<void> {
  let done = 0;
  while (done < chunk.byteLength) {
    const { bytesWritten } = await fh.write(chunk, done, chunk.byteLength - done);
    done += bytesWritten;
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function statOrUndefined(path: string) {
  try {
    return await stat(path);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw err;
  }
}

async function fileExists(path: string): Promise<boolean> {
  return (await statOrUndefined(path))?.isFile() ?? false;
}

function isErrno(err: unknown, code: string): boolean {
  return err instanceof Error && (err as NodeJS.ErrnoException).code === code;
}

function toBlobInfo(row: BlobRow): BlobInfo {
  return {
    digest: row.digest as Digest,
    size: row.size,
    createdAt: new Date(row.created_at),
    labels: row.labels ? (JSON.parse(row.labels) as Labels) : {},
  };
}
