import type { CredentialStore } from './credentials.js';
import type { Descriptor, ParsedManifest } from './media.js';
import type { Reference } from './reference.js';

export type { Descriptor } from './media.js';

/** A manifest or index read from a registry: its descriptor, exact bytes (verified), and parsed form. */
export type Manifest = ParsedManifest & { descriptor: Descriptor; bytes: Uint8Array };

/** What `pushBlob` did: the registry had the blob, mounted it from another repository, or received it. */
export type PushBlobResult = 'exists' | 'mounted' | 'uploaded';

export interface PushBlobOptions {
  /**
   * Repositories (paths, e.g. "team/base") of the same registry known to
   * hold the blob: the client asks the registry to mount it from them
   * (`POST .../blobs/uploads/?mount=<digest>&from=<repo>`) before uploading.
   */
  mountFrom?: string | readonly string[];
  /**
   * Upload in chunks of this many bytes (PATCH with Content-Range, then PUT);
   * default: the client's `uploadChunkSize`, else one monolithic PUT.
   */
  chunkSize?: number;
}

/**
 * The OCI distribution client Kiln's tiers use (`createRegistryClient`
 * implements it over HTTP; tests may fake it).
 *
 * Ownership: the client owns its authentication state (the challenge each
 * host answered with, credentials asked once per host from the caller's
 * CredentialStore, bearer tokens cached per scope until they expire) and
 * nothing else: connections come from Node's global fetch pool, there is
 * nothing to close. Buffers it yields belong to the caller; buffers passed
 * in must not change until the call settles.
 *
 * Cancellation: every call takes an AbortSignal; aborting stops the request
 * in flight and any backoff wait, and the call rejects with a KilnError
 * `canceled`. Breaking out of a `fetch` iteration closes its connection.
 *
 * Errors: KilnErrors whose message names the reference, e.g.
 * "failed to resolve 127.0.0.1:5000/a/b:tag: not found", with
 * `details.reference` and `details.status`: 401 -> unauthenticated, 403 ->
 * permission_denied, 404 -> not_found, 5xx/429/connection failures (after
 * the retries) -> unavailable, other 4xx -> invalid_argument, content that
 * does not match its digest or size -> failed_precondition. 429, 5xx and
 * broken connections are retried with bounded exponential backoff honouring
 * Retry-After; other 4xx never are.
 */
export interface RegistryClient {
  /**
   * Resolves a tag or digest to the descriptor of the manifest or index it
   * names (HEAD, then GET when the registry's HEAD does not say enough).
   * Accepts OCI manifests and indexes and Docker schema 2 manifests and
   * manifest lists. Mirrors configured for the registry are tried first.
   */
  resolve(ref: Reference, signal?: AbortSignal): Promise<Descriptor>;
  /**
   * Reads and parses a manifest or index: the one `desc` names (verified
   * against its digest and size), else the one the reference's digest or
   * tag names (verified against the reference's digest when it has one).
   */
  getManifest(ref: Reference, desc?: Descriptor, signal?: AbortSignal): Promise<Manifest>;
  /**
   * Streams a blob, or a manifest when `desc.mediaType` is a manifest type,
   * by digest from the reference's repository. The digest and size are
   * verified while streaming and the last chunk is held back until they
   * match: a mismatch throws failed_precondition and no byte received
   * should be kept. A connection broken mid-stream is resumed with a Range
   * request from the offset reached.
   */
  fetch(ref: Reference, desc: Descriptor, signal?: AbortSignal): AsyncIterable<Uint8Array>;
  /**
   * Uploads a blob to the reference's repository unless the registry has it:
   * HEAD first, then a cross-repository mount when `options.mountFrom` names
   * candidates, then a monolithic or chunked upload of `data()` (called
   * again when an interrupted upload restarts). The content is checked
   * against `desc` while it is sent.
   */
  pushBlob(
    ref: Reference,
    desc: Descriptor,
    data: () => AsyncIterable<Uint8Array>,
    signal?: AbortSignal,
    options?: PushBlobOptions,
  ): Promise<PushBlobResult>;
  /**
   * Puts a manifest or index (its blobs must already be in the repository)
   * under the reference's tag, or by digest when it has none. `body` must
   * match `desc` (digest and size), or invalid_argument is thrown before
   * anything is sent.
   */
  pushManifest(ref: Reference, desc: Descriptor, body: Uint8Array, signal?: AbortSignal): Promise<void>;
  /**
   * A client for one build: it asks `first` for a host's credentials (once
   * per host for the returned client's lifetime) and falls back to this
   * client's own store when `first` has none. It shares this client's
   * options, the hosts' challenges and its token cache; tokens are keyed by
   * the credentials they were issued for, so one build's identity never
   * serves another. Nothing to close.
   */
  withCredentials(first: CredentialStore): RegistryClient;
  /**
   * An opaque key naming the identity this client uses for registry
   * `domain` (as in references: "docker.io", "127.0.0.1:5000"): equal keys,
   * equal access; "anonymous" without credentials. Callers key caches of
   * registry answers by it. Rejects when the credential store fails.
   */
  credentialsKeyFor(domain: string, signal?: AbortSignal): Promise<string>;
}
