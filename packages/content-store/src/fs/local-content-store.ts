import { createHash, randomUUID, type Hash } from 'node:crypto';
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
import {
  GC_REF_LABEL_PREFIXES,
  GC_ROOT_LABELS,
  type BlobInfo,
  type ContentStore,
  type CreateLeaseOptions,
  type GcOptions,
  type GcResult,
  type IngestStatus,
  type Labels,
  type Lease,
  type ListOptions,
  type ReadOptions,
  type RootProvider,
  type WriteOptions,
  type WriteRequest,
  type WriteResult,
} from '../content-store.js';
import { CONTENT_EVENT_SUBJECTS, encodeContentEvent, type ContentEventKind, type Publish } from '../events.js';
import { compileFilters } from './filters.js';
import { mark, planSweep, type SweepCandidate } from './gc-plan.js';
import { KeyedMutex } from './keyed-mutex.js';
import { migrate } from './schema.js';
import { openDatabase, sqliteCode, type Database, type Statement } from './sqlite.js';
import {
  ALGORITHMS,
  blobNotFound,
  canceled,
  checkAborted,
  checkByteCount,
  HEX_RE,
  parseContentDigest,
  quote,
  raceAbort,
  sizeMismatch,
  validateLabels,
  validateRef,
  validateWriteRequest,
  type Algorithm,
  type ParsedDigest,
  type ValidWriteRequest,
} from './validate.js';

export interface LocalContentStoreOptions {
  /**
   * Directory owned by this store (created if missing): `blobs/<alg>/<hex>`,
   * `ingest/<id>/data` and `metadata.db`. One process at a time may open it
   * (a second one fails with `unavailable`); the lock dies with its process.
   */
  root: string;
  logger?: Logger;
  /**
   * Inactive ingests (interrupted writes nobody resumed) untouched for longer
   * than this are removed when the store opens and by `gc`. Default 24 h.
   */
  ingestExpiryMs?: number;
  /**
   * Receives content events (`events.ContentEvent`) on `kiln.content.committed`
   * and `kiln.content.deleted`, e.g. `(s, d) => bus.publish(s, d)`.
   */
  publish?: Publish;
  /** References held outside the store (see `RootProvider`); more with `addRootProvider`. */
  rootProviders?: readonly RootProvider[];
  /** Clock in unix ms, for tests. */
  now?: () => number;
}

export interface GcPolicy {
  /** Time between the end of one run and the start of the next. */
  intervalMs: number;
  keepBytes?: number;
  keepDurationMs?: number;
  /** Called with every run's result. */
  onResult?: (result: GcResult) => void;
  /** Called when a run fails (it is also logged); the policy keeps running. */
  onError?: (err: unknown) => void;
}

export interface GcPolicyHandle {
  /** Stops the policy and waits for a run in progress. */
  stop(): Promise<void>;
}

/** The filesystem store: a ContentStore plus what only an in-process owner can do. */
export interface LocalContentStore extends ContentStore {
  readonly root: string;
  /** Adds a root provider to every later GC; the returned function removes it. */
  addRootProvider(provider: RootProvider): () => void;
  /**
   * Runs `gc({ keepBytes, keepDurationMs })` every `intervalMs` (first run
   * after one interval) until stopped or the store closes.
   */
  startGcPolicy(policy: GcPolicy): GcPolicyHandle;
  /**
   * The committed blob's file, opened for reading (NotFound when absent), for
   * a tier in this same process that copies it in the kernel (the all-in-one
   * daemon's exporters: `copyFileRange` into a local write). An open file
   * stays readable even if GC removes the blob; the caller closes it.
   */
  openBlob(digest: string): Promise<FileHandle>;
}

/** Chunk size of `read`. */
const READ_CHUNK = 2 ** 20;
/** Buffer size when re-hashing data already on disk. */
const REHASH_CHUNK = 4 * 1024 * 1024;
/** Rows fetched per `list` query; no statement stays open across a yield. */
const LIST_PAGE = 256;
const DEFAULT_INGEST_EXPIRY_MS = 24 * 60 * 60 * 1000;
/** Reads record their time in memory; it reaches SQLite at most this often (and before a GC, at close). */
const TOUCH_FLUSH_MS = 1000;
/** How long opening waits for a store another process is closing. */
const LOCK_WAIT_MS = 1500;

const INFO_COLUMNS = `b.digest, b.size, b.created_at, b.last_used_at,
  (SELECT json_group_object(l.key, l.value) FROM labels l WHERE l.digest = b.digest) AS labels`;

interface BlobRow {
  digest: string;
  size: number;
  created_at: number;
  last_used_at: number;
  labels: string | null;
}

interface IngestRow {
  ref: string;
  id: string;
  algorithm: string;
  expected_digest: string | null;
  expected_size: number | null;
  started_at: number;
  updated_at: number;
}

interface LeaseRow {
  id: string;
  created_at: number;
  expires_at: number | null;
  labels: string;
}

/** A write attached to its ingest right now. */
interface LiveIngest {
  offset: number;
  updatedAt: number;
}

/** What a write will do, settled before any byte moves. */
interface IngestPlan {
  algorithm: Algorithm;
  expected: ParsedDigest | undefined;
  expectedSize: number | undefined;
  offset: number;
  startedAt: number;
}

/**
 * Opens (creating if needed) a content store on the local filesystem and
 * recovers from a crash (even `kill -9`) of its previous owner:
 * - ingest directories with no ingest row are removed, ingest rows whose
 *   data file is gone are dropped, inactive ingests older than the ingest
 *   expiry are removed (fresher ones stay, for a resume);
 * - blob files with no metadata row (a commit cut between the rename and the
 *   metadata) are re-hashed and registered (or removed if corrupt); rows
 *   whose blob file is gone are dropped.
 */
export async function openLocalContentStore(options: LocalContentStoreOptions): Promise<LocalContentStore> {
  const logger = (options.logger ?? silentLogger()).child({ component: 'content-store' });
  const root = options.root;
  if (typeof root !== 'string' || root === '') throw new InvalidArgumentError('content store root must be a directory path', 'root');
  const ingestExpiryMs = options.ingestExpiryMs ?? DEFAULT_INGEST_EXPIRY_MS;
  checkByteCount(ingestExpiryMs, 'ingestExpiryMs');
  for (const alg of ALGORITHMS) await mkdir(join(root, 'blobs', alg), { recursive: true });
  await mkdir(join(root, 'ingest'), { recursive: true });

  const db = openDatabase(join(root, 'metadata.db'), LOCK_WAIT_MS);
  try {
    try {
      // Exclusive locking: the first access takes a lock on the database file
      // that this connection keeps until it closes or its process dies, so a
      // second process (or a second open here) cannot recover over our writes.
      // It also means WAL without a shared-memory index (no -shm file).
      db.pragma('locking_mode = EXCLUSIVE');
      db.pragma('journal_mode = WAL');
      db.exec('BEGIN IMMEDIATE; COMMIT');
    } catch (err) {
      if (sqliteCode(err) === 'SQLITE_BUSY') {
        throw new UnavailableError(`content store ${root} is in use by another process (or another open store)`, { root });
      }
      throw err;
    }
    db.pragma('busy_timeout = 5000');
    // FULL: labels (GC roots, image names) and blobs must survive a power loss, not only a crash.
    // Leases, use times and a new ingest's row are written without an fsync of their own: see LocalStore.withoutFsync.
    db.pragma('synchronous = FULL');
    db.pragma('foreign_keys = ON');
    migrate(db);
    const store = new LocalStore(root, db, logger, {
      ingestExpiryMs,
      publish: options.publish,
      rootProviders: options.rootProviders ?? [],
      now: options.now ?? Date.now,
    });
    await store.recover();
    return store;
  } catch (err) {
    db.close();
    throw err;
  }
}

class LocalStore implements LocalContentStore {
  private readonly blobRoot: string;
  private readonly ingestDir: string;
  private readonly now: () => number;
  private readonly ingestExpiryMs: number;
  private readonly publish: Publish | undefined;
  private readonly rootProviders: Set<RootProvider>;

  /** Serializes everything that moves a blob file or its row, per digest. */
  private readonly digestLocks = new KeyedMutex();
  /** One GC at a time. */
  private readonly gcLock = new KeyedMutex();
  /** Refs a write owns (from its start, including waits, to its end). */
  private readonly claimedRefs = new Set<string>();
  /** Refs of writes streaming data now, with their progress. */
  private readonly live = new Map<string, LiveIngest>();
  /** Ingests being removed (abort, GC); a write of the ref waits. */
  private readonly ingestRemovals = new Map<string, Promise<void>>();
  /** Digests an ingest with that expected digest is writing; writers of the same digest wait. */
  private readonly writing = new Map<string, Promise<void>>();
  /** Digests used since each running GC started (they survive it). */
  private readonly gcWatchers = new Set<Set<string>>();
  private readonly policies = new Set<GcPolicyHandle>();
  private readonly pendingTouches = new Map<string, number>();
  private touchTimer: NodeJS.Timeout | undefined;
  private readonly inflight = new Set<Promise<unknown>>();
  private readonly closing = new AbortController();
  private closePromise: Promise<void> | undefined;

  private readonly stmt: {
    info: Statement<[string], BlobRow>;
    blobSize: Statement<[string], { size: number }>;
    allDigests: Statement<[], { digest: string }>;
    gcBlobs: Statement<[], { digest: string; size: number; last_used_at: number }>;
    upsertBlob: Statement<[string, number, number, number]>;
    useBlob: Statement<[number, string]>;
    deleteBlob: Statement<[string]>;
    setLabel: Statement<[string, string, string]>;
    deleteLabel: Statement<[string, string]>;
    getLabel: Statement<[string, string], { value: string }>;
    rootLabels: Statement<string[], { digest: string }>;
    refLabels: Statement<[], { digest: string; value: string }>;
    getIngest: Statement<[string], IngestRow>;
    upsertIngest: Statement<[string, string, string, string | null, number | null, number, number]>;
    touchIngest: Statement<[number, string]>;
    deleteIngest: Statement<[string]>;
    allIngests: Statement<[], IngestRow>;
    insertLease: Statement<[string, number, number | null, string]>;
    getLease: Statement<[string], LeaseRow>;
    deleteLease: Statement<[string]>;
    allLeases: Statement<[], LeaseRow>;
    expiredLeases: Statement<[number], { id: string }>;
    addResource: Statement<[string, string]>;
    addResourceIfLease: Statement<[string, string, string]>;
    deleteResource: Statement<[string, string]>;
    leaseResources: Statement<[string], { digest: string }>;
    liveLeaseResources: Statement<[number], { digest: string }>;
  };

  constructor(
    readonly root: string,
    private readonly db: Database,
    private readonly logger: Logger,
    opts: { ingestExpiryMs: number; publish: Publish | undefined; rootProviders: readonly RootProvider[]; now: () => number },
  ) {
    this.blobRoot = join(root, 'blobs');
    this.ingestDir = join(root, 'ingest');
    this.now = opts.now;
    this.ingestExpiryMs = opts.ingestExpiryMs;
    this.publish = opts.publish;
    this.rootProviders = new Set(opts.rootProviders);
    const refGlobs = GC_REF_LABEL_PREFIXES.map(() => 'l.key GLOB ?').join(' OR ');
    this.stmt = {
      info: db.prepare(`SELECT ${INFO_COLUMNS} FROM blobs b WHERE b.digest = ?`),
      blobSize: db.prepare('SELECT size FROM blobs WHERE digest = ?'),
      allDigests: db.prepare('SELECT digest FROM blobs'),
      gcBlobs: db.prepare('SELECT digest, size, last_used_at FROM blobs'),
      upsertBlob: db.prepare(
        `INSERT INTO blobs (digest, size, created_at, last_used_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (digest) DO UPDATE SET size = excluded.size, last_used_at = excluded.last_used_at`,
      ),
      useBlob: db.prepare('UPDATE blobs SET last_used_at = MAX(last_used_at, ?) WHERE digest = ?'),
      deleteBlob: db.prepare('DELETE FROM blobs WHERE digest = ?'),
      setLabel: db.prepare(
        'INSERT INTO labels (digest, key, value) VALUES (?, ?, ?) ON CONFLICT (digest, key) DO UPDATE SET value = excluded.value',
      ),
      deleteLabel: db.prepare('DELETE FROM labels WHERE digest = ? AND key = ?'),
      getLabel: db.prepare('SELECT value FROM labels WHERE digest = ? AND key = ?'),
      rootLabels: db.prepare(`SELECT DISTINCT digest FROM labels WHERE key IN (${GC_ROOT_LABELS.map(() => '?').join(', ')})`),
      refLabels: db
        .prepare<string[], { digest: string; value: string }>(`SELECT l.digest, l.value FROM labels l WHERE ${refGlobs}`)
        .bind(...GC_REF_LABEL_PREFIXES.map((p) => `${globEscape(p)}*`)),
      getIngest: db.prepare('SELECT * FROM ingests WHERE ref = ?'),
      upsertIngest: db.prepare(
        `INSERT INTO ingests (ref, id, algorithm, expected_digest, expected_size, started_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (ref) DO UPDATE SET algorithm = excluded.algorithm, expected_digest = excluded.expected_digest,
           expected_size = excluded.expected_size, started_at = excluded.started_at, updated_at = excluded.updated_at`,
      ),
      touchIngest: db.prepare('UPDATE ingests SET updated_at = ? WHERE ref = ?'),
      deleteIngest: db.prepare('DELETE FROM ingests WHERE ref = ?'),
      allIngests: db.prepare('SELECT * FROM ingests ORDER BY ref'),
      insertLease: db.prepare('INSERT INTO leases (id, created_at, expires_at, labels) VALUES (?, ?, ?, ?)'),
      getLease: db.prepare('SELECT * FROM leases WHERE id = ?'),
      deleteLease: db.prepare('DELETE FROM leases WHERE id = ?'),
      allLeases: db.prepare('SELECT * FROM leases ORDER BY id'),
      expiredLeases: db.prepare('SELECT id FROM leases WHERE expires_at IS NOT NULL AND expires_at <= ? ORDER BY id'),
      addResource: db.prepare('INSERT OR IGNORE INTO lease_resources (lease_id, digest) VALUES (?, ?)'),
      addResourceIfLease: db.prepare(
        'INSERT OR IGNORE INTO lease_resources (lease_id, digest) SELECT ?, ? WHERE EXISTS (SELECT 1 FROM leases WHERE id = ?)',
      ),
      deleteResource: db.prepare('DELETE FROM lease_resources WHERE lease_id = ? AND digest = ?'),
      leaseResources: db.prepare('SELECT digest FROM lease_resources WHERE lease_id = ? ORDER BY digest'),
      liveLeaseResources: db.prepare(
        `SELECT DISTINCT r.digest FROM lease_resources r JOIN leases l ON l.id = r.lease_id
         WHERE l.expires_at IS NULL OR l.expires_at > ?`,
      ),
    };
  }

  // ---- blobs ----

  async info(digest: string): Promise<BlobInfo> {
    this.ensureOpen();
    const d = parseContentDigest(digest);
    const row = this.stmt.info.get(d.digest);
    if (!row) throw blobNotFound(d.digest);
    return this.toBlobInfo(row);
  }

  async openBlob(digest: string): Promise<FileHandle> {
    this.ensureOpen();
    const d = parseContentDigest(digest);
    if (!this.stmt.blobSize.get(d.digest)) throw blobNotFound(d.digest);
    try {
      const fh = await open(this.blobPath(d), 'r');
      this.touch(d.digest);
      return fh;
    } catch (err) {
      if (isErrno(err, 'ENOENT')) throw blobNotFound(d.digest);
      throw err;
    }
  }

  async *read(digest: string, options: ReadOptions = {}): AsyncGenerator<Uint8Array> {
    this.ensureOpen();
    const d = parseContentDigest(digest);
    const offset = options.offset ?? 0;
    checkByteCount(offset, 'offset');
    if (options.size !== undefined) checkByteCount(options.size, 'size');
    const signal = options.signal;
    checkAborted(signal);
    if (!this.stmt.blobSize.get(d.digest)) throw blobNotFound(d.digest);

    let fh: FileHandle;
    try {
      fh = await open(this.blobPath(d), 'r');
    } catch (err) {
      if (isErrno(err, 'ENOENT')) throw blobNotFound(d.digest);
      throw err;
    }
    try {
      const { size: total } = await fh.stat();
      if (offset > total) {
        throw new InvalidArgumentError(`offset ${offset} is past the end of ${d.digest} (${total} bytes)`, 'offset');
      }
      this.touch(d.digest);
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
      await this.claimRef(req.ref, signal);
      try {
        if (req.lease !== undefined) this.requireLiveLease(req.lease);
        const plan = await this.planIngest(req);
        const expected = plan.expected;
        if (expected) {
          // Another write of the same digest in this store: wait for it, then
          // find the blob committed (or, if it failed, do the work ourselves).
          for (;;) {
            const existing = await this.commitIfPresent(req, plan, expected);
            if (existing) {
              await this.dropIngest(req.ref);
              return existing;
            }
            const pending = this.writing.get(expected.digest);
            if (!pending) break;
            this.logger.debug({ digest: expected.digest, ref: req.ref }, 'waiting for a write of the same digest');
            await raceAbort(pending, signal);
          }
        }
        let done: (() => void) | undefined;
        if (expected) this.writing.set(expected.digest, new Promise<void>((resolve) => (done = resolve)));
        try {
          return await this.ingest(req, plan, data, signal);
        } finally {
          if (expected) {
            this.writing.delete(expected.digest);
            done?.();
          }
        }
      } finally {
        this.claimedRefs.delete(req.ref);
      }
    });
  }

  delete(digest: string): Promise<void> {
    return this.track(async () => {
      const d = parseContentDigest(digest);
      await this.digestLocks.run(d.digest, async () => {
        const row = this.stmt.blobSize.get(d.digest);
        let removed = false;
        try {
          await unlink(this.blobPath(d));
          removed = true;
        } catch (err) {
          if (!isErrno(err, 'ENOENT')) throw err;
        }
        if (!row && !removed) throw blobNotFound(d.digest);
        this.stmt.deleteBlob.run(d.digest);
        this.pendingTouches.delete(d.digest);
        this.logger.debug({ digest: d.digest }, 'blob deleted');
        this.emit('deleted', d.digest, row?.size ?? 0);
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
        yield this.toBlobInfo(row);
      }
      const last = rows[rows.length - 1];
      if (rows.length < LIST_PAGE || !last) return;
      after = last.digest;
    }
  }

  updateLabels(digest: string, labels: Labels): Promise<BlobInfo> {
    return this.track(async () => {
      const d = parseContentDigest(digest);
      const valid = validateLabels(labels);
      return this.digestLocks.run(d.digest, async () => {
        const row = this.db.transaction(() => {
          if (!this.stmt.blobSize.get(d.digest)) throw blobNotFound(d.digest);
          this.mergeLabels(d.digest, valid);
          return this.stmt.info.get(d.digest);
        })();
        if (!row) throw blobNotFound(d.digest);
        this.noteUsed(d.digest);
        return this.toBlobInfo(row);
      });
    });
  }

  // ---- ingests ----

  async status(ref: string): Promise<IngestStatus> {
    this.ensureOpen();
    validateRef(ref);
    const row = this.stmt.getIngest.get(ref);
    if (!row) throw new NotFoundError(`no ingest with ref ${quote(ref)}`, { ref });
    return this.toStatus(row);
  }

  async listStatuses(): Promise<IngestStatus[]> {
    this.ensureOpen();
    const out: IngestStatus[] = [];
    for (const row of this.stmt.allIngests.all()) out.push(await this.toStatus(row));
    return out;
  }

  abort(ref: string): Promise<void> {
    return this.track(async () => {
      validateRef(ref);
      const removing = this.ingestRemovals.get(ref);
      if (removing) return removing;
      if (this.claimedRefs.has(ref)) {
        throw new UnavailableError(`ingest ref ${quote(ref)} is being written; cancel that write first`, { ref });
      }
      const row = this.stmt.getIngest.get(ref);
      if (!row) throw new NotFoundError(`no ingest with ref ${quote(ref)}`, { ref });
      await this.removeIngest(row);
      this.logger.debug({ ref }, 'ingest aborted');
    });
  }

  // ---- leases ----

  async createLease(id?: string, options: CreateLeaseOptions = {}): Promise<Lease> {
    this.ensureOpen();
    const leaseId = id === undefined || id === '' ? `lease-${randomUUID()}` : validateRef(id, 'id');
    const expiresAt = options.expiresAt;
    if (expiresAt !== undefined && (!(expiresAt instanceof Date) || Number.isNaN(expiresAt.getTime()))) {
      throw new InvalidArgumentError('expiresAt must be a valid Date', 'expiresAt');
    }
    const labels = validateLabels(options.labels);
    const createdAt = this.now();
    try {
      this.withoutFsync(() => this.stmt.insertLease.run(leaseId, createdAt, expiresAt?.getTime() ?? null, JSON.stringify(labels)));
    } catch (err) {
      if (sqliteCode(err)?.startsWith('SQLITE_CONSTRAINT')) {
        throw new KilnError('already_exists', `lease ${quote(leaseId)} already exists`, { lease: leaseId });
      }
      throw err;
    }
    return { id: leaseId, createdAt: new Date(createdAt), ...(expiresAt ? { expiresAt: new Date(expiresAt.getTime()) } : {}), labels };
  }

  async deleteLease(id: string): Promise<void> {
    this.ensureOpen();
    validateRef(id, 'id');
    if (this.withoutFsync(() => this.stmt.deleteLease.run(id)).changes === 0) throw leaseNotFound(id);
  }

  async listLeases(): Promise<Lease[]> {
    this.ensureOpen();
    return this.stmt.allLeases.all().map(toLease);
  }

  async addLeaseResource(lease: string, digest: string): Promise<void> {
    this.ensureOpen();
    const d = parseContentDigest(digest);
    this.requireLiveLease(validateRef(lease, 'lease'));
    this.withoutFsync(() => this.stmt.addResource.run(lease, d.digest));
    this.noteUsed(d.digest);
  }

  async deleteLeaseResource(lease: string, digest: string): Promise<void> {
    this.ensureOpen();
    const d = parseContentDigest(digest);
    if (!this.stmt.getLease.get(validateRef(lease, 'lease'))) throw leaseNotFound(lease);
    this.withoutFsync(() => this.stmt.deleteResource.run(lease, d.digest));
  }

  async listLeaseResources(lease: string): Promise<Digest[]> {
    this.ensureOpen();
    if (!this.stmt.getLease.get(validateRef(lease, 'lease'))) throw leaseNotFound(lease);
    return this.stmt.leaseResources.all(lease).map((r) => r.digest as Digest);
  }

  // ---- garbage collection ----

  addRootProvider(provider: RootProvider): () => void {
    this.ensureOpen();
    if (typeof provider?.roots !== 'function') throw new InvalidArgumentError('a root provider needs a roots() function', 'provider');
    this.rootProviders.add(provider);
    return () => {
      this.rootProviders.delete(provider);
    };
  }

  gc(options: GcOptions = {}): Promise<GcResult> {
    return this.track(async () => {
      if (options.keepBytes !== undefined) checkByteCount(options.keepBytes, 'keepBytes');
      if (options.keepDurationMs !== undefined) checkByteCount(options.keepDurationMs, 'keepDurationMs');
      const signal = options.signal ? AbortSignal.any([options.signal, this.closing.signal]) : this.closing.signal;
      return this.gcLock.run('gc', () => this.runGc(options, signal));
    });
  }

  startGcPolicy(policy: GcPolicy): GcPolicyHandle {
    this.ensureOpen();
    if (!Number.isSafeInteger(policy.intervalMs) || policy.intervalMs <= 0) {
      throw new InvalidArgumentError(`intervalMs must be a positive integer, got ${policy.intervalMs}`, 'intervalMs');
    }
    if (policy.keepBytes !== undefined) checkByteCount(policy.keepBytes, 'keepBytes');
    if (policy.keepDurationMs !== undefined) checkByteCount(policy.keepDurationMs, 'keepDurationMs');
    let stopped = false;
    let timer: NodeJS.Timeout | undefined;
    let running: Promise<void> | undefined;
    const schedule = () => {
      if (stopped || this.closePromise) return;
      timer = setTimeout(run, policy.intervalMs);
      timer.unref();
    };
    const run = () => {
      timer = undefined;
      if (stopped || this.closePromise) return;
      running = this.gc({ keepBytes: policy.keepBytes, keepDurationMs: policy.keepDurationMs })
        .then(
          (result) => policy.onResult?.(result),
          (err: unknown) => {
            if (!this.closePromise) this.logger.warn({ err }, 'periodic GC failed');
            policy.onError?.(err);
          },
        )
        .catch((err: unknown) => this.logger.warn({ err }, 'GC policy callback failed'))
        .finally(() => {
          running = undefined;
          schedule();
        });
    };
    const handle: GcPolicyHandle = {
      stop: async () => {
        stopped = true;
        if (timer) clearTimeout(timer);
        this.policies.delete(handle);
        await running;
      },
    };
    this.policies.add(handle);
    schedule();
    return handle;
  }

  private async runGc(options: GcOptions, signal: AbortSignal): Promise<GcResult> {
    const dryRun = options.dryRun === true;
    const started = this.now();
    const usedDuringGc = new Set<string>();
    this.gcWatchers.add(usedDuringGc);
    try {
      checkAborted(signal);
      this.flushTouches();
      const external = await this.providerRoots(signal);
      const staleCandidates = await this.staleIngestCandidates(this.now());
      checkAborted(signal);

      // From here to the row deletions: no await, so the metadata cannot
      // change under the decision.
      const now = this.now();
      const staleIngests = staleCandidates.filter((r) => {
        if (this.claimedRefs.has(r.ref) || this.ingestRemovals.has(r.ref)) return false;
        const now = this.stmt.getIngest.get(r.ref); // unchanged since it was judged stale?
        return now?.id === r.id && now.updated_at === r.updated_at && now.started_at === r.started_at;
      });
      const staleRefs = new Set(staleIngests.map((r) => r.ref));
      const roots = new Set<string>(external);
      for (const d of usedDuringGc) roots.add(d);
      for (const d of this.writing.keys()) roots.add(d);
      for (const d of this.digestLocks.keys()) roots.add(d);
      for (const r of this.stmt.liveLeaseResources.all(now)) roots.add(r.digest);
      for (const r of this.stmt.rootLabels.all(...GC_ROOT_LABELS)) roots.add(r.digest);
      for (const r of this.stmt.allIngests.all()) {
        if (r.expected_digest && !staleRefs.has(r.ref)) roots.add(r.expected_digest);
      }
      const refs = new Map<string, string[]>();
      for (const { digest, value } of this.stmt.refLabels.all()) {
        if (!isDigest(value)) continue;
        const list = refs.get(digest);
        if (list) list.push(value);
        else refs.set(digest, [value]);
      }
      const marked = mark(roots, refs);
      let totalBytes = 0;
      const candidates: SweepCandidate[] = [];
      for (const b of this.stmt.gcBlobs.all()) {
        totalBytes += b.size;
        if (!marked.has(b.digest)) candidates.push({ digest: b.digest, size: b.size, lastUsedAt: b.last_used_at });
      }
      const doomed = planSweep(candidates, refs, {
        now,
        totalBytes,
        keepBytes: options.keepBytes,
        keepDurationMs: options.keepDurationMs,
      });
      const expiredLeases = this.stmt.expiredLeases.all(now).map((r) => r.id);
      const result: GcResult = {
        removed: doomed.map((c) => c.digest as Digest),
        bytesFreed: doomed.reduce((n, c) => n + c.size, 0),
        ingestsRemoved: staleIngests.map((r) => r.ref),
        leasesExpired: expiredLeases,
        dryRun,
      };
      if (dryRun) return result;

      this.db.transaction(() => {
        for (const c of doomed) this.stmt.deleteBlob.run(c.digest);
        for (const id of expiredLeases) this.stmt.deleteLease.run(id);
      })();
      // Queued synchronously: any later operation on these digests runs after the unlink.
      const unlinks = doomed.map((c) =>
        this.digestLocks.run(c.digest, async () => {
          this.pendingTouches.delete(c.digest);
          try {
            await unlink(this.blobPath(parseContentDigest(c.digest)));
          } catch (err) {
            if (!isErrno(err, 'ENOENT')) this.logger.warn({ err, digest: c.digest }, 'GC could not remove a blob file');
          }
          this.emit('deleted', c.digest, c.size);
        }),
      );
      const removals = staleIngests.map((r) => this.removeIngest(r));
      await Promise.all([...unlinks, ...removals]);
      this.logger.info(
        {
          removed: result.removed.length,
          bytesFreed: result.bytesFreed,
          ingestsRemoved: result.ingestsRemoved.length,
          leasesExpired: expiredLeases.length,
          ms: this.now() - started,
        },
        'garbage collected',
      );
      return result;
    } finally {
      this.gcWatchers.delete(usedDuringGc);
    }
  }

  private async providerRoots(signal: AbortSignal): Promise<Set<string>> {
    const out = new Set<string>();
    for (const provider of [...this.rootProviders]) {
      let invalid = 0;
      const add = (d: unknown) => {
        if (typeof d === 'string' && isDigest(d)) out.add(d);
        else invalid++;
      };
      try {
        const roots = await provider.roots(signal);
        if (isAsyncIterable(roots)) {
          for await (const d of roots) add(d);
        } else {
          for (const d of roots) add(d);
        }
      } catch (err) {
        if (signal.aborted) throw canceled(signal);
        const msg = err instanceof Error ? err.message : String(err);
        throw new KilnError('unavailable', `GC root provider ${quote(provider.name)} failed (nothing was removed): ${msg}`, {
          provider: provider.name,
        }, { cause: err });
      }
      if (invalid > 0) this.logger.warn({ provider: provider.name, invalid }, 'GC root provider returned invalid digests (ignored)');
      checkAborted(signal);
    }
    return out;
  }

  private async staleIngestCandidates(now: number): Promise<IngestRow[]> {
    const out: IngestRow[] = [];
    for (const row of this.stmt.allIngests.all()) {
      if (this.claimedRefs.has(row.ref)) continue;
      const st = await statOrUndefined(this.ingestDataPath(row.id));
      const updated = Math.max(row.updated_at, st?.mtimeMs ?? 0);
      if (now - updated > this.ingestExpiryMs) out.push(row);
    }
    return out;
  }

  /** Removes an ingest's row and directory; a write of the ref waits for it. Call with the ref unclaimed. */
  private removeIngest(row: IngestRow): Promise<void> {
    const p = (async () => {
      this.stmt.deleteIngest.run(row.ref);
      await rm(join(this.ingestDir, row.id), { recursive: true, force: true });
    })().finally(() => this.ingestRemovals.delete(row.ref));
    this.ingestRemovals.set(row.ref, p);
    return p;
  }

  // ---- lifecycle ----

  close(): Promise<void> {
    if (!this.closePromise) {
      this.closing.abort(new CanceledError('content store is closing'));
      this.closePromise = (async () => {
        await Promise.allSettled([...this.policies].map((p) => p.stop()));
        while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
        if (this.touchTimer) clearTimeout(this.touchTimer);
        this.touchTimer = undefined;
        try {
          this.flushTouches();
        } catch (err) {
          this.logger.warn({ err }, 'could not record blob use times');
        }
        this.db.close();
      })();
    }
    return this.closePromise;
  }

  /** Reconciles the directories with the metadata after an unclean stop. */
  async recover(): Promise<void> {
    const now = this.now();
    const counts = { ingestsRemoved: 0, ingestsKept: 0, blobsRegistered: 0, corruptRemoved: 0, blobRowsDropped: 0, blobs: 0 };

    const ingests = this.stmt.allIngests.all();
    const byId = new Map(ingests.map((r) => [r.id, r]));
    for (const entry of await readdir(this.ingestDir)) {
      if (byId.has(entry)) continue;
      await rm(join(this.ingestDir, entry), { recursive: true, force: true });
      counts.ingestsRemoved++;
    }
    for (const row of ingests) {
      const st = await statOrUndefined(this.ingestDataPath(row.id));
      const updated = Math.max(row.updated_at, st?.mtimeMs ?? 0);
      if (st?.isFile() && now - updated <= this.ingestExpiryMs) {
        counts.ingestsKept++;
        continue;
      }
      this.stmt.deleteIngest.run(row.ref);
      await rm(join(this.ingestDir, row.id), { recursive: true, force: true });
      counts.ingestsRemoved++;
    }

    const files = new Set<string>();
    for (const alg of ALGORITHMS) {
      const dir = join(this.blobRoot, alg);
      for (const entry of await readdir(dir, { withFileTypes: true })) {
        if (!HEX_RE[alg].test(entry.name) || !entry.isFile()) {
          this.logger.warn({ path: join(dir, entry.name) }, 'ignoring unexpected entry in blob directory');
          continue;
        }
        files.add(`${alg}:${entry.name}`);
      }
    }
    const rows = new Set(this.stmt.allDigests.all().map((r) => r.digest));
    for (const digest of files) {
      if (rows.has(digest)) continue;
      // A commit cut between its rename and its metadata (or a delete cut
      // between its metadata and its unlink): verify before trusting it.
      const d = parseContentDigest(digest);
      const path = this.blobPath(d);
      const actual = await hashPath(path, d.algorithm);
      if (actual.digest !== digest) {
        await unlink(path).catch(() => {});
        files.delete(digest);
        this.logger.warn({ digest, actual: actual.digest }, 'removed a blob file that does not match its digest');
        counts.corruptRemoved++;
        continue;
      }
      this.stmt.upsertBlob.run(digest, actual.size, Math.round(actual.mtimeMs), Math.round(actual.mtimeMs));
      this.logger.warn({ digest, size: actual.size }, 'registered blob found without metadata');
      counts.blobsRegistered++;
    }
    for (const digest of rows) {
      if (files.has(digest)) continue;
      this.stmt.deleteBlob.run(digest);
      this.logger.warn({ digest }, 'dropped metadata of missing blob');
      counts.blobRowsDropped++;
    }
    counts.blobs = files.size;
    this.logger.info({ root: this.root, ...counts }, 'content store opened');
  }

  // ---- write internals ----

  /** Waits for a removal of the ref's ingest, then owns the ref (or fails: another write owns it). */
  private async claimRef(ref: string, signal: AbortSignal): Promise<void> {
    for (let r = this.ingestRemovals.get(ref); r; r = this.ingestRemovals.get(ref)) {
      await raceAbort(r.catch(() => {}), signal);
    }
    if (this.claimedRefs.has(ref)) {
      throw new UnavailableError(`ingest ref ${quote(ref)} is already being written`, { ref });
    }
    this.claimedRefs.add(ref);
  }

  /** Settles expectations and the resume point, without side effects (the ref is claimed). */
  private async planIngest(req: ValidWriteRequest): Promise<IngestPlan> {
    const now = this.now();
    if (req.offset === 0) {
      return {
        algorithm: req.expected?.algorithm ?? 'sha256',
        expected: req.expected,
        expectedSize: req.expectedSize,
        offset: 0,
        startedAt: now,
      };
    }
    const cannot = (why: string) =>
      new KilnError('failed_precondition', `cannot resume ingest ref ${quote(req.ref)} at offset ${req.offset}: ${why}`, {
        ref: req.ref,
        offset: req.offset,
      });
    const row = this.stmt.getIngest.get(req.ref);
    if (!row) throw cannot('there is no interrupted write of it (start at offset 0)');
    const previous = row.expected_digest ? parseContentDigest(row.expected_digest) : undefined;
    if (req.expected && previous && req.expected.digest !== previous.digest) {
      throw cannot(`it was started expecting ${previous.digest}, not ${req.expected.digest}`);
    }
    if (req.expected && req.expected.algorithm !== row.algorithm) {
      throw cannot(`it was started hashing with ${row.algorithm}, not ${req.expected.algorithm}`);
    }
    if (req.expectedSize !== undefined && row.expected_size !== null && req.expectedSize !== row.expected_size) {
      throw cannot(`it was started expecting ${row.expected_size} bytes, not ${req.expectedSize}`);
    }
    const expectedSize = req.expectedSize ?? row.expected_size ?? undefined;
    if (expectedSize !== undefined && req.offset > expectedSize) throw cannot(`past the expected size ${expectedSize}`);
    const st = await statOrUndefined(this.ingestDataPath(row.id));
    if (!st?.isFile()) throw cannot('its data is gone (start at offset 0)');
    if (req.offset > st.size) throw cannot(`only ${st.size} bytes were received (see its status)`);
    return {
      algorithm: row.algorithm === 'sha512' ? 'sha512' : 'sha256',
      expected: req.expected ?? previous,
      expectedSize,
      offset: req.offset,
      startedAt: row.started_at,
    };
  }

  private async ingest(
    req: ValidWriteRequest,
    plan: IngestPlan,
    data: AsyncIterable<Uint8Array>,
    signal: AbortSignal,
  ): Promise<WriteResult> {
    const id = ingestId(req.ref);
    const dir = join(this.ingestDir, id);
    const dataPath = this.ingestDataPath(id);
    const started = this.now();
    // Not fsynced of its own (see withoutFsync): the row only lets an interrupted write resume. A
    // process crash keeps it; a power loss before the next durable commit (this blob's own, at the
    // latest) may drop it, and recover() then removes the ingest directory: the write starts again
    // at offset 0. One fsync fewer on the event loop per blob written (4 per layer of an export).
    this.withoutFsync(() =>
      this.stmt.upsertIngest.run(
        req.ref,
        id,
        plan.algorithm,
        plan.expected?.digest ?? null,
        plan.expectedSize ?? null,
        plan.startedAt,
        started,
      ),
    );
    const live: LiveIngest = { offset: plan.offset, updatedAt: started };
    this.live.set(req.ref, live);

    let it: AsyncIterator<Uint8Array> | undefined;
    let drained = false;
    let committed = false;
    let discard = false;
    let fh: FileHandle | undefined;
    try {
      it = data[Symbol.asyncIterator]();
      await mkdir(dir, { recursive: true });
      const hash = createHash(plan.algorithm);
      let size = plan.offset;
      if (plan.offset > 0) {
        fh = await open(dataPath, 'r+');
        await fh.truncate(plan.offset);
        await hashRange(fh, hash, plan.offset, signal);
        this.logger.debug({ ref: req.ref, offset: plan.offset }, 'resuming ingest');
      } else {
        fh = await open(dataPath, 'w');
      }
      const flusher = new BackgroundFlusher(fh);
      for (;;) {
        let next: IteratorResult<Uint8Array>;
        try {
          next = await raceAbort(it.next(), signal);
        } catch (err) {
          // A malformed stream (e.g. a protocol error in the RPC layer) is not worth resuming.
          if (err instanceof KilnError && err.code === 'invalid_argument') discard = true;
          throw err;
        }
        if (next.done) {
          drained = true;
          break;
        }
        const chunk: unknown = next.value;
        if (!(chunk instanceof Uint8Array)) {
          discard = true;
          throw new InvalidArgumentError('write data must be Uint8Array chunks', 'data');
        }
        const n = chunk.byteLength;
        if (n === 0) continue;
        if (plan.expectedSize !== undefined && size + n > plan.expectedSize) {
          discard = true;
          throw sizeMismatch(req.ref, plan.expectedSize, size + n, true);
        }
        // The write runs on the thread pool while this thread hashes the same bytes.
        const written = writeAll(fh, chunk, size);
        hash.update(chunk);
        await written;
        size += n;
        live.offset = size;
        live.updatedAt = this.now();
        flusher.wrote(n);
      }
      await flusher.settle();
      checkAborted(signal);
      if (plan.expectedSize !== undefined && size !== plan.expectedSize) {
        discard = true;
        throw sizeMismatch(req.ref, plan.expectedSize, size);
      }
      const digest = `${plan.algorithm}:${hash.digest('hex')}` as Digest;
      if (plan.expected && digest !== plan.expected.digest) {
        discard = true;
        throw new KilnError(
          'failed_precondition',
          `digest mismatch for ingest ref ${quote(req.ref)}: expected ${plan.expected.digest}, got ${digest}`,
          { ref: req.ref, expected: plan.expected.digest, actual: digest },
        );
      }
      await fh.sync();
      await fh.close();
      fh = undefined;
      checkAborted(signal);
      await this.commit(req, parseContentDigest(digest), size, dataPath);
      committed = true;
      return { digest, size };
    } finally {
      this.live.delete(req.ref);
      if (it && !drained) {
        // Stop the producer; do not wait for it (it may be stuck, which is why we stopped).
        const stop = it;
        Promise.resolve()
          .then(() => stop.return?.())
          .catch(() => {});
      }
      if (fh) await fh.close().catch(() => {});
      if (committed || discard) {
        if (discard) this.stmt.deleteIngest.run(req.ref);
        await rm(dir, { recursive: true, force: true }).catch((err: unknown) =>
          this.logger.warn({ err, ref: req.ref }, 'could not remove ingest directory'),
        );
      } else if (!this.db.open) {
        // closed under us: nothing to record
      } else {
        // Interrupted: keep the bytes for a resume.
        this.stmt.touchIngest.run(this.now(), req.ref);
        this.logger.debug({ ref: req.ref, offset: live.offset }, 'ingest interrupted; kept for resume');
      }
    }
  }

  /** If the expected blob is committed: checks its size, merges labels and lease, returns it. */
  private commitIfPresent(req: ValidWriteRequest, plan: IngestPlan, expected: ParsedDigest): Promise<WriteResult | undefined> {
    return this.digestLocks.run(expected.digest, async () => {
      const row = this.stmt.blobSize.get(expected.digest);
      if (!row) return undefined;
      const st = await statOrUndefined(this.blobPath(expected));
      if (!st?.isFile() || st.size !== row.size) return undefined;
      if (plan.expectedSize !== undefined && plan.expectedSize !== row.size) {
        throw sizeMismatch(req.ref, plan.expectedSize, row.size);
      }
      const merge = this.db.transaction(() => {
        this.mergeLabels(expected.digest, req.labels);
        this.stmt.useBlob.run(this.now(), expected.digest);
        if (req.lease !== undefined) this.stmt.addResourceIfLease.run(req.lease, expected.digest, req.lease);
      });
      // The same labels again (a cached export's config and manifest): only a use time and a lease change.
      if (this.labelsUnchanged(expected.digest, req.labels)) this.withoutFsync(() => merge());
      else merge();
      this.noteUsed(expected.digest);
      this.logger.debug({ digest: expected.digest, ref: req.ref }, 'write skipped: blob exists');
      return { digest: expected.digest, size: row.size };
    });
  }

  /** Moves a verified ingest file into place and records it (with labels and lease) in one transaction. */
  private async commit(req: ValidWriteRequest, d: ParsedDigest, size: number, dataPath: string): Promise<void> {
    await this.digestLocks.run(d.digest, async () => {
      const path = this.blobPath(d);
      const existing = this.stmt.blobSize.get(d.digest);
      const st = existing ? await statOrUndefined(path) : undefined;
      const present = !!existing && !!st?.isFile() && st.size === existing.size;
      if (present) {
        this.logger.debug({ digest: d.digest, ref: req.ref }, 'blob already present');
      } else {
        await rename(dataPath, path);
        await fsyncDir(join(this.blobRoot, d.algorithm));
      }
      const now = this.now();
      this.db.transaction(() => {
        this.stmt.upsertBlob.run(d.digest, size, now, now);
        this.mergeLabels(d.digest, req.labels);
        if (req.lease !== undefined && this.stmt.addResourceIfLease.run(req.lease, d.digest, req.lease).changes === 0) {
          if (!this.stmt.getLease.get(req.lease)) this.logger.warn({ lease: req.lease, digest: d.digest }, 'lease vanished during write');
        }
        this.stmt.deleteIngest.run(req.ref);
      })();
      this.noteUsed(d.digest);
      this.logger.debug({ digest: d.digest, size, ref: req.ref }, 'blob committed');
      if (!present) this.emit('committed', d.digest, size);
    });
  }

  /** Removes the interrupted ingest of a claimed ref, if any. */
  private async dropIngest(ref: string): Promise<void> {
    const row = this.stmt.getIngest.get(ref);
    if (!row) return;
    this.stmt.deleteIngest.run(ref);
    await rm(join(this.ingestDir, row.id), { recursive: true, force: true });
  }

  /** Whether merging `labels` into the blob's would change nothing. */
  private labelsUnchanged(digest: string, labels: Labels): boolean {
    return Object.entries(labels).every(([key, value]) => (this.stmt.getLabel.get(digest, key)?.value ?? '') === value);
  }

  /**
   * Runs `write` (one SQLite commit) with synchronous=NORMAL: it reaches the
   * WAL but is not fsynced itself; the next FULL commit or checkpoint makes
   * it durable with everything written before it (the WAL is one file,
   * written in order). For what must survive a crash of the process but
   * need not survive a power loss: leases and their resources, which guard
   * work in flight (a power loss ends that work; a holder that outlives the
   * store finds its lease gone and fails, and a lease whose delete was lost
   * expires or is dropped like any left behind by a crash), and blob use
   * times, and the row an ingest starts with (see ingest). Labels (GC
   * roots, image names), blobs and a committed ingest's removal stay FULL.
   * Saves the 4-5 fsyncs a cached export made (lease create, layer leases,
   * config and manifest already present, lease delete).
   */
  private withoutFsync<T>(write: () => T): T {
    this.db.pragma('synchronous = NORMAL');
    try {
      return write();
    } finally {
      this.db.pragma('synchronous = FULL');
    }
  }

  /** Call inside a transaction. */
  private mergeLabels(digest: string, labels: Labels): void {
    for (const [key, value] of Object.entries(labels)) {
      if (value === '') this.stmt.deleteLabel.run(digest, key);
      else this.stmt.setLabel.run(digest, key, value);
    }
  }

  private requireLiveLease(id: string): void {
    const row = this.stmt.getLease.get(id);
    if (!row) throw leaseNotFound(id);
    if (row.expires_at !== null && row.expires_at <= this.now()) {
      throw new KilnError('failed_precondition', `lease ${quote(id)} has expired`, { lease: id });
    }
  }

  // ---- helpers ----

  private async toStatus(row: IngestRow): Promise<IngestStatus> {
    const live = this.live.get(row.ref);
    let offset: number;
    let updatedAt: number;
    if (live) {
      offset = live.offset;
      updatedAt = live.updatedAt;
    } else {
      const st = await statOrUndefined(this.ingestDataPath(row.id));
      offset = st?.isFile() ? st.size : 0;
      updatedAt = Math.max(row.updated_at, Math.round(st?.mtimeMs ?? 0));
    }
    return {
      ref: row.ref,
      offset,
      ...(row.expected_digest ? { expectedDigest: row.expected_digest as Digest } : {}),
      ...(row.expected_size !== null ? { expectedSize: row.expected_size } : {}),
      startedAt: new Date(row.started_at),
      updatedAt: new Date(updatedAt),
      active: this.claimedRefs.has(row.ref),
    };
  }

  /** Records a use of a blob: for GC policies (in memory, flushed soon) and for any running GC. */
  private touch(digest: string): void {
    this.noteUsed(digest);
    if (this.closePromise) return;
    this.pendingTouches.set(digest, this.now());
    if (!this.touchTimer) {
      this.touchTimer = setTimeout(() => {
        this.touchTimer = undefined;
        try {
          this.flushTouches();
        } catch (err) {
          this.logger.warn({ err }, 'could not record blob use times');
        }
      }, TOUCH_FLUSH_MS);
      this.touchTimer.unref();
    }
  }

  private flushTouches(): void {
    if (this.pendingTouches.size === 0 || !this.db.open) return;
    const touches = [...this.pendingTouches];
    this.pendingTouches.clear();
    this.withoutFsync(() =>
      this.db.transaction(() => {
        for (const [digest, at] of touches) this.stmt.useBlob.run(at, digest);
      })(),
    );
  }

  /** A running GC keeps whatever is used while it runs. */
  private noteUsed(digest: string): void {
    for (const w of this.gcWatchers) w.add(digest);
  }

  private emit(kind: ContentEventKind, digest: string, size: number): void {
    if (!this.publish) return;
    const warn = (err: unknown) => this.logger.warn({ err, digest, kind }, 'could not publish content event');
    try {
      const r = this.publish(CONTENT_EVENT_SUBJECTS[kind], encodeContentEvent(kind, digest, size));
      if (r && typeof r.then === 'function') r.then(undefined, warn);
    } catch (err) {
      warn(err);
    }
  }

  private toBlobInfo(row: BlobRow): BlobInfo {
    const pending = this.pendingTouches.get(row.digest) ?? 0;
    return {
      digest: row.digest as Digest,
      size: row.size,
      createdAt: new Date(row.created_at),
      lastUsedAt: new Date(Math.max(row.last_used_at, pending)),
      labels: row.labels ? (JSON.parse(row.labels) as Labels) : {},
    };
  }

  /** Runs an operation that `close` waits for. */
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

  /** Only ever called with a validated digest. */
  private blobPath(d: ParsedDigest): string {
    return join(this.blobRoot, d.algorithm, d.hex);
  }

  /** `id` is the sha256 hex of a ref, never the ref itself. */
  private ingestDataPath(id: string): string {
    return join(this.ingestDir, id, 'data');
  }
}

// ---- helpers ----

function ingestId(ref: string): string {
  return createHash('sha256').update(ref).digest('hex');
}

function leaseNotFound(id: string): NotFoundError {
  return new NotFoundError(`lease ${quote(id)} not found`, { lease: id });
}

function toLease(row: LeaseRow): Lease {
  return {
    id: row.id,
    createdAt: new Date(row.created_at),
    ...(row.expires_at !== null ? { expiresAt: new Date(row.expires_at) } : {}),
    labels: JSON.parse(row.labels) as Labels,
  };
}

function globEscape(s: string): string {
  return s.replace(/[*?[\]]/g, (c) => `[${c}]`);
}

function isAsyncIterable(x: unknown): x is AsyncIterable<unknown> {
  return typeof x === 'object' && x !== null && Symbol.asyncIterator in x;
}

// ---- fs helpers ----

async function writeAll(fh: FileHandle, chunk: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < chunk.byteLength) {
    const { bytesWritten } = await fh.write(chunk, done, chunk.byteLength - done, position + done);
    done += bytesWritten;
  }
}

/** Feeds the first `length` bytes of `fh` into `hash`. */
async function hashRange(fh: FileHandle, hash: Hash, length: number, signal: AbortSignal): Promise<void> {
  const buf = Buffer.allocUnsafe(Math.min(REHASH_CHUNK, Math.max(length, 1)));
  let pos = 0;
  while (pos < length) {
    checkAborted(signal);
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, length - pos), pos);
    if (bytesRead === 0) throw new KilnError('internal', `ingest data ended at ${pos} bytes, ${length} expected`);
    hash.update(buf.subarray(0, bytesRead));
    pos += bytesRead;
  }
}

async function hashPath(path: string, algorithm: Algorithm): Promise<{ digest: string; size: number; mtimeMs: number }> {
  const fh = await open(path, 'r');
  try {
    const st = await fh.stat();
    const hash = createHash(algorithm);
    await hashRange(fh, hash, st.size, new AbortController().signal);
    return { digest: `${algorithm}:${hash.digest('hex')}`, size: st.size, mtimeMs: st.mtimeMs };
  } finally {
    await fh.close();
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

function isErrno(err: unknown, code: string): boolean {
  return err instanceof Error && (err as NodeJS.ErrnoException).code === code;
}

/**
 * Starts an fdatasync on the thread pool each time another FLUSH_EVERY bytes
 * were written (one at a time), so the disk writes back while the stream
 * is still being hashed, and the fsync at commit only waits for the tail
 * instead of the whole blob. Its errors surface at `settle()`.
 */
class BackgroundFlusher {
  static readonly FLUSH_EVERY = 64 * 1024 * 1024;
  #unflushed = 0;
  #pending: Promise<void> | undefined;
  #error: unknown;
  constructor(private readonly fh: FileHandle) {}

  wrote(n: number): void {
    this.#unflushed += n;
    if (this.#unflushed < BackgroundFlusher.FLUSH_EVERY || this.#pending) return;
    this.#unflushed = 0;
    this.#pending = this.fh
      .datasync()
      .catch((err: unknown) => {
        this.#error ??= err;
      })
      .finally(() => {
        this.#pending = undefined;
      });
  }

  /** Waits for a running flush; throws the first flush error. */
  async settle(): Promise<void> {
    await this.#pending;
    if (this.#error !== undefined) throw this.#error;
  }
}
