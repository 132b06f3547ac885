import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { session } from '@kiln/api';
import { InvalidArgumentError, silentLogger, type Logger } from '@kiln/common';
import { isOpKind, OP_KINDS, type OpKind } from '@kiln/llb';
import { createRegistryClient, type RegistryClient } from '@kiln/registry';
import type { Snapshotter } from '@kiln/snapshotter';
import type { Executor } from './executor.js';
import { BaseWorker } from './base-worker.js';
import { emulatedPlatforms, nativeAndEmulated } from './emulation.js';
import { openRetainedRefs, type RetainedRefs } from './retained-refs.js';
import type { ContentClient } from './layers/content-blobs.js';
import type { LayerDescriptor } from './layers/layer-maker.js';
import type { LayerCompression } from './layers/media-types.js';

import type { ImportedLayer } from './ops/layer-import.js';
import type { PathSelector } from './fs/path-checksum.js';
import type { RefFileStat } from './fs/ref-files.js';
import { compileNetworkOptions, type CompiledNetworkOptions, type NetworkOptions } from './network/options.js';

export type { ContentClient, ImportedLayer, LayerCompression, LayerDescriptor, PathSelector };

/**
 * A Worker runs LLB ops on snapshots and holds their results as refs. It is
 * the domain object behind `kiln.worker.v1.WorkerService`
 * (see `createWorkerServiceImpl`); backends differ only in the Executor and
 * Snapshotter they pass to `createWorker`.
 */
export interface Worker {
  readonly id: string;

  /** Identity, platforms and labels, for scheduling. Never rejects. */
  describe(): Promise<WorkerDescription>;

  /**
   * Runs one op on the input refs and returns one new ref per op output.
   *
   * Ownership: input refs stay owned by the caller (run neither takes nor
   * drops a reference). Each returned ref carries one reference for the
   * caller, dropped with `release`. When an identical op (same digest,
   * same input contents) already has live results, those refs are returned
   * again with one more reference each, so a ref may be shared by several
   * builds; local sources are always fetched again, but when the session
   * names the directory's shared key only what changed since the last copy
   * of it is transferred.
   *
   * Progress: transfer status and process output are published as
   * `kiln.events.v1.BuildEvent`s on `kiln.progress.<workerId>.<buildId>.status|log`
   * (the solver relays them into the build's `kiln.build.<buildId>.*`).
   *
   * Errors: a failing op rejects with VertexError (details.digest =
   * `vertexDigest`, message "failed to <verb> <path>: <reason>"); an op kind,
   * source scheme or option this worker cannot run rejects with
   * UnimplementedError naming it; an unknown input ref with NotFoundError;
   * `signal` aborting with CanceledError, leaving no snapshots behind.
   * Runs are independent and may be concurrent.
   */
  run(req: RunRequest): Promise<RunResult>;

  /**
   * Streams the filesystem of `ref` as an uncompressed tar: entries in
   * sorted path order (a directory before its contents), no root entry,
   * modes, uid/gid and mtimes (seconds) kept, symlinks as symlinks,
   * hardlinks as links to their first path. Same tree, same bytes.
   * The ref is held until the iteration ends (or is abandoned with
   * `return()`), so a concurrent release cannot pull the tree away.
   * Errors: NotFoundError for an unknown ref (on first iteration).
   */
  exportRef(ref: string, opts?: { signal?: AbortSignal }): AsyncIterable<Uint8Array>;

  /**
   * Drops one reference of each ref; a ref whose last reference goes is
   * forgotten and its snapshot removed. Unknown refs are ignored, so a
   * retried release is harmless.
   */
  release(refs: readonly string[]): Promise<void>;

  /**
   * Keeps `refs` alive for `owner` until `drop`: each gets one reference
   * for the owner, so builds releasing the ref do not remove its snapshot.
   * A persistent retention (not `ephemeral`) is written to disk, and the ref
   * comes back under the same id after the worker restarts; its snapshot is
   * never removed by `close`. Retaining a ref twice for one owner is a no-op.
   * Returns the refs this worker does not know (nothing is retained for them).
   */
  retain(refs: readonly string[], owner: string, opts?: { ephemeral?: boolean }): Promise<{ missing: string[] }>;

  /** Ends `owner`'s retention of `refs` (as `release` of its reference). Unknown refs and owners are ignored. */
  drop(refs: readonly string[], owner: string): Promise<void>;

  /** Disk usage and owners of refs' snapshots; unknown refs come back with `found: false`. */
  refUsage(refs: readonly string[]): Promise<RefUsage[]>;

  /**
   * The layer chain of `ref` as blobs in the content store, base first: the
   * layers of its docker-image source as pulled (media type renamed to the
   * requested OCI/Docker family; recompressed only with
   * `forceCompression`), then one layer per snapshot an op made on top of
   * them, the diff against its parent (see `planTreeDiff` of
   * @kiln/snapshotter), empty diffs left out. Every blob is added to
   * `lease`; a layer made before with the same options is reused when the
   * store still has it. Independent layers are compressed in parallel on
   * worker threads; the bytes are those of a sequential run.
   *
   * The ref is held until the call ends. Errors: NotFoundError for an
   * unknown ref; InvalidArgumentError naming `compression` or
   * `compression_level`; `failed_precondition` when the worker has no
   * content store; CanceledError when `signal` aborts.
   */
  getLayers(ref: string, opts?: GetLayersOptions): Promise<LayerDescriptor[]>;

  /**
   * Makes a ref from layer blobs in the content store (a cache import):
   * each layer is applied, by OCI chain id, onto the snapshot of the layers
   * below it, reusing chains this worker already has (pulled images,
   * earlier imports). The layer snapshots persist like pulled image layers;
   * `getLayers` of the ref returns the same blobs (not `fromBase`, with
   * their `createdBy`). The ref carries one reference for the caller.
   *
   * Errors: InvalidArgumentError for a malformed descriptor; UnimplementedError
   * for an unknown media type; `failed_precondition` when the worker has no
   * content store or a blob does not unpack to its diff id; NotFoundError
   * when the store lacks a blob; CanceledError when `signal` aborts.
   */
  importLayers(layers: readonly ImportedLayer[], opts?: { signal?: AbortSignal }): Promise<string>;

  /**
   * A digest of what `selectors` select in `ref` (see selectorChecksum):
   * names, types, permission bits, owners, symlink targets and file
   * contents, never mtimes. Cached per snapshot and selector list; files of
   * a local source's snapshot take their digests from its transfer
   * manifest instead of being read again.
   * Errors: NotFoundError for an unknown ref.
   */
  checksum(ref: string, selectors: readonly PathSelector[]): Promise<string>;

  /**
   * Reads `ref`'s files for the gateway (a frontend reading a result):
   * `read` a byte range of a regular file, `stat` one path, `list` one
   * directory (names matching `pattern`, when given). Paths stay inside the
   * ref's root (symlinks are followed only within it). Errors:
   * NotFoundError for an unknown ref or path; InvalidArgumentError for a
   * path of the wrong type.
   */
  refFiles(ref: string): RefFiles;

  /**
   * The first thing a stopping daemon calls (on SIGTERM, before its slower
   * shutdown): frees what is cheap to free and costly to leak, the ready
   * step network namespaces (see NetworkProvider.releaseIdle). Builds in
   * flight go on; close() waits for it. Never rejects.
   */
  releaseIdle?(): Promise<void>;

  /** Releases every ref and closes the snapshotter. Idempotent; never rejects. */
  close(): Promise<void>;
}

export interface GetLayersOptions {
  /** Default gzip. */
  compression?: LayerCompression;
  /** 0 or absent: the codec's default (gzip 6, zstd 3). */
  compressionLevel?: number;
  /** Recompress base layers whose compression differs. */
  forceCompression?: boolean;
  /** OCI media types (default) or Docker schema 2 ones. */
  ociMediaTypes?: boolean;
  /** Clamp mtimes (seconds since the epoch) in the layers this worker makes. */
  sourceDateEpoch?: number;
  /** Content-store lease the blobs are added to. */
  lease?: string;
  signal?: AbortSignal;
}

export interface RunRequest {
  buildId: string;
  sessionId: string;
  /** "sha256:..." of `op`; names the vertex in events and errors. */
  vertexDigest: string;
  /** Canonical bytes of a `kiln.llb.v1.Op`. */
  op: Uint8Array;
  /** One ref per op input, in input order. */
  inputRefs: readonly string[];
  /** Human-readable step name (for logs). */
  description?: string;
  /**
   * Entitlements the build was granted (`kiln build --allow`); an op that
   * needs one must find it here and in `WorkerOptions.allowedEntitlements`.
   */
  entitlements?: readonly string[];
  /** The solver bypassed its cache for this step (`--no-cache`): its cache mounts start empty. */
  noCache?: boolean;
  signal?: AbortSignal;
}

export interface RunResult {
  /** One ref per op output, by output index. */
  outputRefs: string[];
  /**
   * Per output, a digest of the content a local source received (paths,
   * types, modes, owners, link targets, file contents; never mtimes), or ''
   * when the op has none. Absent for ops other than local sources.
   */
  contentDigests?: string[];
  /** A local source's files with their content digests (incremental transfers; see RunResponse.content_files). */
  contentFiles?: { path: string; digest: string }[];
}

export interface RefUsage {
  ref: string;
  found: boolean;
  sizeBytes: number;
  owners: string[];
}

export interface WorkerDescription {
  id: string;
  backend: WorkerBackend;
  platforms: WorkerPlatform[];
  labels: Record<string, string>;
  /** The op kinds it runs (@kiln/llb OP_KINDS minus those it lacks or was told to refuse). */
  ops: string[];
}

/** The op kinds the worker lib runs (no DiffOp yet). */
export const SUPPORTED_OPS: readonly OpKind[] = OP_KINDS.filter((k) => k !== 'diff');

export type WorkerBackend = 'oci' | 'containerd';

export interface WorkerPlatform {
  os: string;
  architecture: string;
  variant?: string;
}

/**
 * What the worker needs from the session relay: `FetchFiles` of
 * `kiln.session.v1.SessionService`. A Connect client of that service
 * (`createKilnClient(session.SessionService, transport)`) satisfies it.
 */
export interface SessionFiles {
  fetchFiles(
    request: MessageInitShape<typeof session.FetchFilesRequestSchema>,
    options?: { signal?: AbortSignal },
  ): AsyncIterable<session.FetchFilesResponse>;
  /**
   * `DescribeDir`: the client's shared key of a directory. Without it (or
   * with an empty key) every local source is a full transfer.
   */
  describeDir?(
    request: MessageInitShape<typeof session.DescribeDirRequestSchema>,
    options?: { signal?: AbortSignal },
  ): Promise<{ sharedKey: string }>;
}

/**
 * `GetSecret` of SessionService: a secret the client exposes
 * (`kiln build --secret id=...`). `found` is false when the client has no
 * secret by that id. The bytes must never reach logs, events or snapshots.
 */
export interface SessionSecrets {
  getSecret(
    request: MessageInitShape<typeof session.GetSecretRequestSchema>,
    options?: { signal?: AbortSignal },
  ): Promise<{ found: boolean; data: Uint8Array }>;
}

/**
 * `GetCredentials` of SessionService: registry credentials for one host from
 * the client's docker config (empty username and secret: none).
 */
export interface SessionCredentials {
  getCredentials(
    request: MessageInitShape<typeof session.GetCredentialsRequestSchema>,
    options?: { signal?: AbortSignal },
  ): Promise<{ username: string; secret: string }>;
}

/**
 * `ForwardSsh` of SessionService: one connection to the client's SSH agent
 * as a bidi byte stream (first request: the header naming session and id).
 */
export interface SessionSsh {
  forwardSsh(
    requests: AsyncIterable<MessageInitShape<typeof session.ForwardSshRequestSchema>>,
    options?: { signal?: AbortSignal },
  ): AsyncIterable<{ data: Uint8Array }>;
}

/**
 * Everything the worker asks of a build's client session. A Connect client
 * of SessionService satisfies all of it; a session without secrets,
 * credentials or SSH support fails only the steps that need them.
 */
export type WorkerSession = SessionFiles & Partial<SessionSecrets & SessionCredentials & SessionSsh>;

/** Entitlements an exec op may need (`kiln build --allow`, daemon `entitlements`). */
export type Entitlement = 'security.insecure' | 'network.host';
export const ENTITLEMENTS: readonly Entitlement[] = ['security.insecure', 'network.host'];

/**
 * Publishes one message on the event bus (`EventBus.publish` of @kiln/bus
 * has this shape: pass `(s, d) => bus.publish(s, d)`). Failures are logged
 * and never fail a build step.
 */
export type PublishFn = (subject: string, data: Uint8Array) => Promise<void>;

export interface WorkerOptions {
  /** Unique worker id, reported by `describe`. */
  id: string;
  backend: WorkerBackend;
  /** Owned by the worker from now on: `close()` closes it. */
  snapshotter: Snapshotter;
  executor: Executor;
  /** The client sessions, reached through the solver's relay (see WorkerSession). */
  sessions: WorkerSession;
  publish: PublishFn;
  /** Entitlements this daemon permits builds to use. Default: none. */
  allowedEntitlements?: readonly Entitlement[];
  /** Exec ops running at once; more wait their turn. Default: the number of cores. */
  maxParallelExecs?: number;
  logger?: Logger;
  /**
   * The platforms exec ops may target. Default: the host's (linux/<arch>)
   * plus those qemu-user emulates through binfmt_misc (see emulatedPlatforms).
   */
  platforms?: WorkerPlatform[];
  labels?: Record<string, string>;
  /**
   * Op kinds this worker refuses though it could run them (see @kiln/llb
   * OP_KINDS; kilnd's `--worker-disable-op`), e.g. `exec` on a worker that
   * must run no build's code, `source:git` where git is not reachable. The
   * worker announces the rest and the solver places no such op here.
   */
  disabledOps?: readonly string[];
  /** Minimum interval between transfer status events of one source. Default 1000. */
  progressIntervalMs?: number;
  /** Where `docker-image://` sources are pulled from. Default `createRegistryClient({})` (plain HTTP for loopback registries). */
  registry?: RegistryClient;
  /**
   * The content store layers are written to (and pulled image blobs kept
   * in), e.g. `createKilnClient(content.ContentService, transport)`.
   * Without it `getLayers` fails with `failed_precondition`.
   */
  content?: ContentClient;
  /**
   * Directory for the worker's own state: layer cache, staged blobs, and
   * under `exec/` persistent cache mounts plus per-run secret tmpfs mounts
   * and SSH agent sockets (stale ones are removed on the first run after a
   * restart). One worker owns a state dir at a time. Default: a temp dir,
   * layer cache in memory only.
   */
  stateDir?: string;
  /** Threads that compress layers at once. Default: the number of cores. */
  layerThreads?: number;
  /** Where ref retentions are kept. Default: in memory (retained refs do not survive a restart). */
  retainedRefs?: RetainedRefs;
  /**
   * The network of RUN steps without `--network` (see NetworkOptions;
   * kilnd's `[worker.network]`). Default mode "none" (loopback only): a
   * library user opts in to CNI, kilnd defaults to it.
   */
  network?: NetworkOptions;
  /**
   * Told when the last reference to a ref goes (released, or dropped by its
   * last owner: `kiln prune`, the GC), after its snapshot was removed (a
   * layer snapshot stays). Not called for the refs `close()` forgets.
   * Must not throw; what it starts runs on its own.
   */
  onRefGone?: (ref: string) => void;
}

/** WorkerOptions with every default applied. */
export interface CompiledWorkerOptions extends Required<Omit<WorkerOptions, 'labels' | 'platforms' | 'content' | 'stateDir' | 'allowedEntitlements' | 'retainedRefs' | 'network' | 'disabledOps' | 'onRefGone'>> {
  /** The op kinds it runs: SUPPORTED_OPS minus `disabledOps`. */
  ops: ReadonlySet<string>;
  network: CompiledNetworkOptions;
  platforms: WorkerPlatform[];
  labels: Record<string, string>;
  content?: ContentClient;
  stateDir?: string;
  retainedRefs: RetainedRefs;
  onRefGone?: (ref: string) => void;
  /** Where exec state lives: `<stateDir>/exec`, or a temp dir without a stateDir. */
  execStateDir: string;
  allowedEntitlements: ReadonlySet<Entitlement>;
}

/** Validates and defaults WorkerOptions; throws InvalidArgumentError naming the field. */
export function compileWorkerOptions(options: WorkerOptions): CompiledWorkerOptions {
  if (!options.id) throw new InvalidArgumentError('worker id must be set', 'id');
  if (options.backend !== 'oci' && options.backend !== 'containerd') {
    throw new InvalidArgumentError(`unknown worker backend "${String(options.backend)}"`, 'backend');
  }
  for (const k of ['snapshotter', 'executor', 'sessions', 'publish'] as const) {
    if (!options[k]) throw new InvalidArgumentError(`${k} must be set`, k);
  }
  const progressIntervalMs = options.progressIntervalMs ?? 1000;
  if (!(progressIntervalMs >= 0)) throw new InvalidArgumentError('progressIntervalMs must be >= 0', 'progressIntervalMs');
  for (const e of options.allowedEntitlements ?? []) {
    if (!ENTITLEMENTS.includes(e)) throw new InvalidArgumentError(`unknown entitlement "${String(e)}" (one of ${ENTITLEMENTS.join(', ')})`, 'allowedEntitlements');
  }
  const maxParallelExecs = options.maxParallelExecs ?? availableParallelism();
  if (!Number.isInteger(maxParallelExecs) || maxParallelExecs < 1) throw new InvalidArgumentError('maxParallelExecs must be a positive integer', 'maxParallelExecs');
  for (const k of options.disabledOps ?? []) {
    if (!isOpKind(k)) throw new InvalidArgumentError(`unknown op kind "${k}" (one of ${OP_KINDS.join(', ')})`, 'disabledOps');
  }
  const { disabledOps = [], ...rest } = options;
  const layerThreads = options.layerThreads ?? availableParallelism();
  if (!(Number.isInteger(layerThreads) && layerThreads >= 1)) throw new InvalidArgumentError('layerThreads must be a whole number >= 1', 'layerThreads');
  return {
    ...rest,
    ops: new Set(SUPPORTED_OPS.filter((k) => !disabledOps.includes(k))),
    execStateDir: options.stateDir ? path.join(options.stateDir, 'exec') : path.join(tmpdir(), `kiln-worker-${options.id}`, 'exec'),
    allowedEntitlements: new Set(options.allowedEntitlements ?? []),
    maxParallelExecs,
    logger: options.logger ?? silentLogger(),
    platforms: options.platforms?.length ? options.platforms : nativeAndEmulated(hostPlatform(), emulatedPlatforms()),
    labels: { ...options.labels },
    progressIntervalMs,
    registry: options.registry ?? createRegistryClient({}),
    retainedRefs: options.retainedRefs ?? openRetainedRefs(':memory:'),
    layerThreads,
    network: compileNetworkOptions(options.network),
  };
}

/** Creates a Worker over the given snapshotter and executor. */
export function createWorker(options: WorkerOptions): Worker {
  return new BaseWorker(compileWorkerOptions(options));
}

/** linux/<arch> of this host in OCI naming. */
export function hostPlatform(): WorkerPlatform {
  const arch: Record<string, WorkerPlatform> = {
    x64: { os: 'linux', architecture: 'amd64' },
    arm64: { os: 'linux', architecture: 'arm64' },
    arm: { os: 'linux', architecture: 'arm', variant: 'v7' },
    ia32: { os: 'linux', architecture: '386' },
    ppc64: { os: 'linux', architecture: 'ppc64le' },
    s390x: { os: 'linux', architecture: 's390x' },
    riscv64: { os: 'linux', architecture: 'riscv64' },
  };
  return arch[process.arch] ?? { os: 'linux', architecture: process.arch };
}

/** The files of one ref, read through a view of its snapshot (see Worker.refFiles). */
export interface RefFiles {
  read(path: string, offset: number, length: number): Promise<Uint8Array>;
  stat(path: string): Promise<RefFileStat>;
  list(path: string, pattern: string): Promise<RefFileStat[]>;
}
