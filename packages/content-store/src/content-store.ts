import type { Digest } from '@kiln/common';

/** Labels on a blob: plain string keys and values (e.g. GC roots, source refs). */
export type Labels = Record<string, string>;

/** What the store knows about one committed blob. */
export interface BlobInfo {
  /** Always a validated "sha256:<64 hex>" digest. */
  readonly digest: Digest;
  /** Size in bytes. */
  readonly size: number;
  /** When the blob was first committed (or re-registered after a crash). */
  readonly createdAt: Date;
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
   * `unavailable`. The ref is never used as a path. A write naming the ref of
   * an interrupted write starts it over (resuming from an offset is not yet
   * supported).
   */
  ref: string;
  /**
   * Digest the content must hash to; absent means "not checked" (the returned
   * digest is whatever the content hashes to). When present and the blob is
   * already committed, `write` succeeds at once without reading `data`.
   */
  expectedDigest?: string;
  /** Size the content must have, in bytes; absent means "not checked". */
  expectedSize?: number;
  /**
   * Labels merged onto the blob on commit, also when it already existed, as
   * `updateLabels` does (an empty value removes that label). Absent: none.
   */
  labels?: Labels;
}

export interface WriteResult {
  readonly digest: Digest;
  readonly size: number;
}

export interface WriteOptions {
  /**
   * Aborting stops the write, even while waiting for `data`: the promise
   * rejects with CanceledError and nothing of the write stays behind.
   */
  signal?: AbortSignal;
}

export interface ListOptions {
  /** Aborting stops the listing: the iteration throws CanceledError. */
  signal?: AbortSignal;
}

/**
 * Blobs addressed by digest, with labels. Implementations: the local
 * filesystem store (`openLocalContentStore`); the Connect service
 * (`createContentServiceImpl`) serves any implementation to other tiers.
 *
 * Conventions shared by every method:
 * - Digests are "sha256:<64 hex>" strings. A malformed digest (or another
 *   algorithm) fails with InvalidArgumentError naming it.
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
  /** Size, creation time and labels of a committed blob. */
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
   * already exists succeeds and only merges the labels.
   *
   * Ownership: the store consumes `data` one chunk at a time and is done with
   * a chunk when it asks for the next one, so a producer may reuse its buffer
   * from then on. If the write fails or is aborted, the store stops pulling
   * and calls `return()` on the iterator.
   *
   * Fails with InvalidArgumentError (bad ref, digest, size or labels),
   * `failed_precondition` (digest or size mismatch: the error names the
   * expected and actual values), `unavailable` (ref busy, store closed) or
   * CanceledError. A failed write leaves no blob and no temp file behind.
   */
  write(request: WriteRequest, data: AsyncIterable<Uint8Array>, options?: WriteOptions): Promise<WriteResult>;

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
   * Aborts writes in progress, waits for them to clean up and releases the
   * store. Reads in progress finish. Calling it again is a no-op.
   */
  close(): Promise<void>;
}
