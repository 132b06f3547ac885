import type { Digest } from '@kiln/common';

/** Labels on a blob or lease: plain string keys and values. */
export type Labels = Record<string, string>;

/**
 * Label keys with a GC meaning (see `ContentStore.gc`):
 * - a blob with a `kiln.gc.root` (or `containerd.io/gc.root`) label, of any
 *   value, is a root;
 * - a label whose key starts with `containerd.io/gc.ref.content` (or
 *   `kiln.gc.ref.content`) and whose value is a digest keeps that digest
 *   alive as long as the labelled blob lives (an index its manifests, a
 *   manifest its config and layers).
 */
export const GC_ROOT_LABELS: readonly string[] = ['kiln.gc.root', 'containerd.io/gc.root'];
export const GC_REF_LABEL_PREFIXES: readonly string[] = ['containerd.io/gc.ref.content', 'kiln.gc.ref.content'];

/** What the store knows about one committed blob. */
export interface BlobInfo {
  /** A validated "sha256:<64 hex>" or "sha512:<128 hex>" digest. */
  readonly digest: Digest;
  /** Size in bytes. */
  readonly size: number;
  /** When the blob was first committed (or re-registered after a crash). */
  readonly createdAt: Date;
  /**
   * Last commit, write of the same content or read start (tracked to about a
   * second). GC policies remove the least recently used blobs first.
   */
  readonly lastUsedAt: Date;
  /** A fresh copy; mutating it does not change the store (see `updateLabels`). */
  readonly labels: Labels;
}

export interface ReadOptions {
  /** First byte to read; 0 when absent. Must not be past the end of the blob. */
  offset?: number;
  /**
   * Most bytes to read; absent reads to the end. A range running past the end
   * of the blob is cut short at the end (not an error). 0 reads nothing.
   */
  size?: number;
  /** Aborting stops the read: the iteration throws CanceledError and the file is closed. */
  signal?: AbortSignal;
}

export interface WriteRequest {
  /**
   * Ingest ref naming this write (e.g. "layer-sha256:..." or a session id). At
   * most one write per ref runs at a time; a second one fails with
   * `unavailable`. The ref is never used as a path.
   */
  ref: string;
  /**
   * Digest the content must hash to ("sha256:..." or "sha512:..."; the
   * algorithm is sha256 when absent); absent means "not checked" (the
   * returned digest is whatever the content hashes to). When present and the
   * blob is already committed, `write` succeeds at once without reading
   * `data`; when another write of the same digest is in progress in this
   * store, this one waits for it and then succeeds without reading `data`
   * (or, if that write failed, does the work itself).
   */
  expectedDigest?: string;
  /** Size the content must have, in bytes; absent means "not checked". */
  expectedSize?: number;
  /**
   * Labels merged onto the blob on commit, also when it already existed, as
   * `updateLabels` does (an empty value removes that label). Absent: none.
   */
  labels?: Labels;
  /**
   * Resume: `data` starts at this byte of the blob. Absent or 0 starts over
   * (discarding interrupted data of the ref). Greater than 0 continues the
   * interrupted ingest of `ref` (see `status`): it must not exceed the bytes
   * already received (data past `offset` is dropped), the hash state is
   * rebuilt by re-reading those bytes, and the expected digest and size
   * default to (and must agree with) the interrupted write's.
   */
  offset?: number;
  /**
   * Lease (see `createLease`) the committed blob is added to, in the same
   * transaction as the commit, so no GC can slip in between. Must exist.
   */
  lease?: string;
}

export interface WriteResult {
  readonly digest: Digest;
  readonly size: number;
}

export interface WriteOptions {
  /**
   * Aborting stops the write, even while waiting for `data`: the promise
   * rejects with CanceledError. The bytes received so far stay as an
   * interrupted ingest that a later write of the same ref can resume.
   */
  signal?: AbortSignal;
}

/** One ingest: a write in progress, or an interrupted one waiting to be resumed. */
export interface IngestStatus {
  readonly ref: string;
  /** Bytes received so far: where a resumed write continues. */
  readonly offset: number;
  readonly expectedDigest?: Digest;
  readonly expectedSize?: number;
  readonly startedAt: Date;
  readonly updatedAt: Date;
  /** A writer is attached now. An inactive ingest waits to be resumed or expires. */
  readonly active: boolean;
}

export interface ListOptions {
  /** Aborting stops the listing: the iteration throws CanceledError. */
  signal?: AbortSignal;
}

/** A lease: while it lives (not deleted, not expired) its resources are GC roots. */
export interface Lease {
  readonly id: string;
  readonly createdAt: Date;
  /** Absent: never expires. */
  readonly expiresAt?: Date;
  readonly labels: Labels;
}

export interface CreateLeaseOptions {
  /** After this time the lease protects nothing and the next GC removes it. */
  expiresAt?: Date;
  labels?: Labels;
}

/**
 * References held outside the store (the solver cache, images): each GC asks
 * every provider for the digests it keeps alive; they and what they reference
 * through gc.ref labels survive. A provider that throws fails the GC (nothing
 * is removed). Digests that are not valid are ignored.
 *
 * Contract for the holder: a blob committed or used while a GC runs survives
 * that GC, but one committed earlier and recorded by the provider only later
 * may not. So write under a lease (`WriteRequest.lease`) and delete the lease
 * once the reference is recorded where the provider reads it.
 */
export interface RootProvider {
  readonly name: string;
  roots(signal: AbortSignal): Iterable<string> | AsyncIterable<string> | Promise<Iterable<string>>;
}

export interface GcOptions {
  /** Report what would be removed without removing anything. */
  dryRun?: boolean;
  /**
   * Remove unreferenced blobs (least recently used first) only while the
   * store holds more than this many bytes of blobs.
   */
  keepBytes?: number;
  /** Remove unreferenced blobs unused for longer than this. */
  keepDurationMs?: number;
  signal?: AbortSignal;
}

export interface GcResult {
  /** Blobs removed (or that would be, in a dry run), least recently used first. */
  readonly removed: Digest[];
  readonly bytesFreed: number;
  /** Refs of stale ingests removed (inactive for longer than the ingest expiry). */
  readonly ingestsRemoved: string[];
  /** Expired leases removed. */
  readonly leasesExpired: string[];
  readonly dryRun: boolean;
}

/**
 * Blobs addressed by digest, with labels, resumable ingests, leases and
 * garbage collection. Implementations: the local filesystem store
 * (`openLocalContentStore`); the Connect service (`createContentServiceImpl`)
 * serves any implementation to other tiers.
 *
 * Conventions shared by every method:
 * - Digests are "sha256:<64 hex>" or "sha512:<128 hex>" strings. A malformed
 *   digest (or another algorithm) fails with InvalidArgumentError naming it.
 * - A blob that is absent fails with NotFoundError naming the digest; no
 *   method returns `undefined` for "absent".
 * - A blob is visible (to `info`, `read`, `list`) only once it is complete
 *   and verified; readers never see a partial blob.
 * - Streaming methods (`read`, `list`) are lazy: nothing happens, and no
 *   error is thrown, until iteration starts. Breaking out of the loop early
 *   releases everything they hold.
 * - After `close()`, every method fails with `unavailable`.
 */
export interface ContentStore {
  /** Size, creation and last use time and labels of a committed blob. */
  info(digest: string): Promise<BlobInfo>;

  /**
   * Streams a blob, or the range `[offset, offset + size)` of it, in chunks of
   * an implementation-chosen size (never empty). Each chunk is a fresh buffer
   * the caller owns and may keep.
   * A blob deleted while it is being read still reads to the end.
   */
  read(digest: string, options?: ReadOptions): AsyncIterable<Uint8Array>;

  /**
   * Ingests `data`, hashing it as it streams, and commits it as a blob once
   * its digest (and size, when expected) is verified. Committing content that
   * already exists succeeds and only merges the labels (and lease).
   *
   * Ownership: the store consumes `data` one chunk at a time and is done with
   * a chunk when it asks for the next one, so a producer may reuse its buffer
   * from then on. If the write fails or is aborted, the store stops pulling
   * and calls `return()` on the iterator.
   *
   * Fails with InvalidArgumentError (bad ref, digest, size, offset, labels or
   * data), NotFoundError (unknown lease), `failed_precondition` (digest or
   * size mismatch, naming the expected and actual values; a resume that does
   * not fit the interrupted ingest), `unavailable` (ref busy, store closed)
   * or CanceledError. A digest or size mismatch discards the data received;
   * any other failure (abort, a failing `data`) keeps it for a resume.
   */
  write(request: WriteRequest, data: AsyncIterable<Uint8Array>, options?: WriteOptions): Promise<WriteResult>;

  /** The ingest named `ref`. Fails with NotFoundError when there is none. */
  status(ref: string): Promise<IngestStatus>;

  /** Every ingest, ordered by ref. */
  listStatuses(): Promise<IngestStatus[]>;

  /**
   * Removes an interrupted ingest and its data. Fails with NotFoundError when
   * there is none and `unavailable` while a writer is attached to it.
   */
  abort(ref: string): Promise<void>;

  /** Removes a blob and its labels. Fails with NotFoundError when absent. */
  delete(digest: string): Promise<void>;

  /**
   * Streams the committed blobs matching every filter, ordered by digest. An
   * empty list matches everything. Filters:
   * - `labels.KEY==VALUE`: the label is present with that value
   * - `labels.KEY!=VALUE`: the label is present with another value
   * - `labels.KEY`: the label is present
   * - `digest==DIGEST`, `digest!=DIGEST`
   * KEY may be double-quoted (`labels."a==b"`), VALUE too (JSON string syntax).
   * A filter outside this grammar fails with InvalidArgumentError.
   */
  list(filters?: readonly string[], options?: ListOptions): AsyncIterable<BlobInfo>;

  /**
   * Merges `labels` into the blob's labels: a key with a non-empty value is
   * set, a key with an empty value ("") is removed, other keys stay. Returns
   * the updated info. Fails with NotFoundError when the blob is absent.
   */
  updateLabels(digest: string, labels: Labels): Promise<BlobInfo>;

  /**
   * Creates a lease (`id` absent: the store picks one). Fails with
   * `already_exists` when the id is taken.
   */
  createLease(id?: string, options?: CreateLeaseOptions): Promise<Lease>;

  /** Deletes a lease; its resources lose its protection. NotFoundError when absent. */
  deleteLease(id: string): Promise<void>;

  /** Every lease (expired ones until a GC removes them), ordered by id. */
  listLeases(): Promise<Lease[]>;

  /**
   * Adds a digest to a live lease. The blob need not exist yet. Fails with
   * NotFoundError (no such lease) or `failed_precondition` (lease expired).
   */
  addLeaseResource(lease: string, digest: string): Promise<void>;

  /** Removes a digest from a lease (a no-op when absent). NotFoundError: no such lease. */
  deleteLeaseResource(lease: string, digest: string): Promise<void>;

  /** The digests a lease holds, ordered. NotFoundError: no such lease. */
  listLeaseResources(lease: string): Promise<Digest[]>;

  /**
   * Garbage collection. Marks from the roots — live leases' resources, blobs
   * labelled as GC roots, the digests root providers name, the expected
   * digests of ingests and blobs being written — following gc.ref labels (see
   * GC_REF_LABEL_PREFIXES), and removes the unmarked blobs (with `keepBytes` /
   * `keepDurationMs`, only some of them: least recently used first, a blob
   * never before one that references it). Also removes expired leases and
   * stale ingests (inactive for longer than the store's ingest expiry); never
   * an active ingest. One GC runs at a time; calls queue.
   */
  gc(options?: GcOptions): Promise<GcResult>;

  /**
   * Aborts writes in progress (their data stays for a resume), waits for
   * them, and releases the store. Reads in progress finish. Calling it again
   * is a no-op.
   */
  close(): Promise<void>;
}
