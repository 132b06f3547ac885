import { fromBinary } from '@bufbuild/protobuf';
import { createHash } from 'node:crypto';
import { llb } from '@kiln/api';
import {
  CanceledError,
  InvalidArgumentError,
  KilnError,
  NotFoundError,
  throwIfAborted,
  UnimplementedError,
  VertexError,
  type Logger,
} from '@kiln/common';
import { digestOf, isOpKind, opKind } from '@kiln/llb';
import { sessionCredentials, type RegistryClient } from '@kiln/registry';
import { CacheMounts } from './exec/cache-mounts.js';
import { Limiter } from './exec/limiter.js';
import { reapSecretDirs } from './exec/secret-dir.js';
import { reapRunFiles } from './exec/run-files.js';
import { NetworkProvider } from './network/step-network.js';
import { ChecksumCache, selectorChecksum, type PathSelector } from './fs/path-checksum.js';
import { exportTree } from './fs/tar-export.js';
import { readRefDir, readRefFile, statRefFile } from './fs/ref-files.js';
import { createLayerMaker } from './layers/index.js';
import type { LayerMaker } from './layers/layer-maker.js';
import { readBlob } from './layers/content-blobs.js';
import type { BaseLayer, LineageSnapshotter } from './layers/lineage.js';
import type { StoredBaseLayer } from './layers/lineage-records.js';
import { compressionLevel } from './layers/media-types.js';
import { runExecOp, sshForwarder } from './ops/exec-op.js';
import { runFileOp } from './ops/file-op.js';
import { runMergeOp } from './ops/merge-op.js';
import { runGitSource } from './ops/git-source.js';
import { runHttpSource } from './ops/http-source.js';
import { LayerStore, registryOrigin, runImageSource } from './ops/image-source.js';
import { layoutOrigin } from './ops/layout-source.js';
import { importLayerChain, type ImportedLayer } from './ops/layer-import.js';
import { LocalContexts, type CachedContext } from './sources/local-contexts.js';
import { runLocalSource, type ContentFile } from './sources/local-source.js';
import type { OpContext, OpResult } from './ops/op-context.js';
import { OpFailure, reasonOf } from './ops/op-failure.js';
import { VertexProgress } from './progress.js';
import { RefTable } from './refs.js';
import type { CompiledWorkerOptions, GetLayersOptions, LayerDescriptor, RefFiles, RefUsage, RunRequest, RunResult, Worker, WorkerDescription } from './worker.js';

interface DispatchHooks {
  onContentDigest: (digest: string) => void;
  onContentFiles: (files: ContentFile[]) => void;
  onContextCopy: (copy: Omit<CachedContext, 'ref'> & { key: string }) => void;
  /** The op's result is this existing ref (one reference taken for the caller), not a new snapshot. */
  onReusedRef: (ref: string) => void;
}

/** The one Worker implementation; backends differ in the options only. */
export class BaseWorker implements Worker {
  readonly id: string;
  private readonly refs = new RefTable();
  /** Image layer snapshots by chain id; refs to them never remove them. */
  private readonly layers: LayerStore;
  private readonly logger: Logger;
  private readonly execLimiter: Limiter;
  /** Persistent `type=cache` directories. */
  private readonly cacheMounts: CacheMounts;
  /** Networks of exec steps (CNI namespaces, resolv.conf). */
  private readonly network: NetworkProvider;
  private readonly reaped: Promise<void>;
  /** Refs restored at start whose snapshot is gone are forgotten; retain waits for this. */
  private readonly refsChecked: Promise<void>;
  /** The persisted lineage read back; getLayers and removals wait for it. */
  private readonly lineageRestored: Promise<void>;
  /** The snapshotter, recording each snapshot's parent, base layer and op (for getLayers). */
  private readonly snapshots: LineageSnapshotter;
  private readonly layerMaker: LayerMaker | undefined;
  /** The last copy of each client directory, for incremental transfers. */
  private readonly localContexts: LocalContexts;
  /** Checksums of selected paths, by snapshot (see checksum). */
  private readonly checksums = new ChecksumCache();
  private closed = false;
  /** Aborts every run in flight when the worker closes. */
  private readonly stopping = new AbortController();
  private readonly inflight = new Set<Promise<unknown>>();

  constructor(private readonly o: CompiledWorkerOptions) {
    this.id = o.id;
    this.logger = o.logger.child({ component: 'worker', worker: o.id });
    const made = createLayerMaker(o, this.logger, (b) => this.refetchBase(b));
    this.snapshots = made.snapshots;
    this.layerMaker = made.maker;
    this.layers = new LayerStore(this.snapshots);
    this.execLimiter = new Limiter(o.maxParallelExecs);
    this.cacheMounts = new CacheMounts(o.execStateDir);
    this.network = new NetworkProvider(o.network, o.execStateDir, this.logger);
    // Which snapshot sits on which, as recorded before a restart (one layer per step for cached refs).
    this.lineageRestored = this.snapshots.restore().catch((err: unknown) => this.logger.warn({ err }, 'failed to restore snapshot lineage'));
    this.localContexts = new LocalContexts({ acquire: (ref) => this.refs.acquire(ref), release: (refs) => this.release(refs) });
    // What a killed daemon left behind (containers, secret tmpfs mounts, run
    // files, snapshots nothing holds); ops and close() wait for this.
    this.reaped = Promise.all([
      reapSecretDirs(o.execStateDir).catch((err: unknown) => this.logger.warn({ err }, 'failed to remove stale secret mounts')),
      reapRunFiles(o.execStateDir).catch((err: unknown) => this.logger.warn({ err }, 'failed to remove stale run files')),
      // Step networks after the containers: a namespace goes once no process holds it.
      (o.executor.reapStale?.() ?? Promise.resolve())
        .catch((err: unknown) => this.logger.warn({ err }, 'failed to remove stale containers'))
        .then(() => this.network.reapStale()),
      // The sweep removes through the lineage: an output a kept child diffs against stays.
      this.lineageRestored.then(() => this.sweepSnapshots()).catch((err: unknown) => this.logger.warn({ err }, 'failed to remove unreferenced snapshots')),
    ]).then(() => undefined);
    // Refs retained before a restart come back under their ids, one reference per owner.
    for (const r of o.retainedRefs.persisted()) this.refs.adopt(r.ref, r.snapshotId);
    this.refsChecked = this.forgetRefsWithoutSnapshot().catch((err: unknown) => this.logger.warn({ err }, 'failed to check restored refs'));
  }

  /**
   * Forgets restored refs whose snapshot the snapshotter no longer has (it
   * drops at open what a crash may have torn: snapshots committed but not
   * yet synced before the machine went down), so the solver's cache record
   * of such a ref finds it missing and the step runs again.
   */
  private async forgetRefsWithoutSnapshot(): Promise<void> {
    const persisted = this.o.retainedRefs.persisted();
    if (persisted.length === 0) return;
    const committed = new Set((await this.snapshots.list()).filter((s) => s.kind === 'committed').map((s) => s.name));
    const lost = persisted.filter((r) => !committed.has(r.snapshotId));
    for (const r of lost) {
      this.o.retainedRefs.remove(r.ref, r.owner);
      this.refs.forget(r.ref);
    }
    if (lost.length > 0) this.logger.warn({ refs: [...new Set(lost.map((r) => r.ref))] }, 'forgot refs whose snapshot is gone (not on disk before a crash)');
  }

  async describe(): Promise<WorkerDescription> {
    return {
      id: this.o.id,
      backend: this.o.backend,
      platforms: this.o.platforms.map((p) => ({ ...p })),
      labels: { ...this.o.labels },
      ops: [...this.o.ops],
    };
  }

  /**
   * Removes every snapshot no persisted retention or image layer label
   * holds: after a crash, the outputs of unfinished builds, context copies
   * and refs held only in memory. Runs before any op, so it never sees a
   * snapshot of this process.
   */
  private async sweepSnapshots(): Promise<void> {
    const kept = this.o.retainedRefs.persistedSnapshots();
    let removed = 0;
    // Newest first: children go before their parents.
    for (const s of (await this.snapshots.list()).reverse()) {
      if (s.kind === 'committed' && (s.label !== undefined || kept.has(s.name))) continue;
      try {
        await this.snapshots.remove(s.name);
        removed++;
      } catch (err) {
        this.logger.warn({ err, snapshot: s.name }, 'failed to remove an unreferenced snapshot');
      }
    }
    if (removed > 0) this.logger.info({ removed }, 'removed snapshots no ref holds (left by an earlier process)');
  }

  async run(req: RunRequest): Promise<RunResult> {
    if (this.closed) throw new KilnError('unavailable', `worker ${this.id} is closed`);
    throwIfAborted(req.signal);
    // close() cancels what is still running, so no container or mount outlives the worker.
    const linked = linkSignals(req.signal, this.stopping.signal);
    const running = this.runOp({ ...req, signal: linked.signal });
    this.inflight.add(running);
    try {
      return await running;
    } finally {
      this.inflight.delete(running);
      linked.dispose();
    }
  }

  private async runOp(req: RunRequest): Promise<RunResult> {
    await this.reaped;
    await this.refsChecked;
    const digest = req.vertexDigest;
    let op: llb.Op;
    try {
      op = fromBinary(llb.OpSchema, req.op);
    } catch (err) {
      throw new InvalidArgumentError(`op of vertex ${digest} does not decode: ${(err as Error).message}`, 'op');
    }
    if (digest && digestOf(req.op) !== digest) {
      throw new InvalidArgumentError(`vertex digest ${digest} does not match the op bytes (${digestOf(req.op)})`, 'vertex_digest');
    }
    // The solver places no op here that this worker does not announce; a client calling Run directly meets the same refusal.
    const kind = opKind(op);
    if (kind !== undefined && isOpKind(kind) && kind !== 'diff' && !this.o.ops.has(kind)) {
      throw new KilnError('failed_precondition', `worker ${this.id} does not run ${kind} ops (it runs: ${[...this.o.ops].join(', ')})`, { digest, opKind: kind });
    }
    if (req.inputRefs.length !== op.inputs.length) {
      throw new InvalidArgumentError(`op of vertex ${digest} has ${op.inputs.length} inputs but ${req.inputRefs.length} input refs were given`, 'input_refs');
    }

    // Hold the inputs for the length of the run, so a concurrent release cannot pull them away.
    const held: string[] = [];
    try {
      const inputs: string[] = [];
      for (const ref of req.inputRefs) {
        const id = this.refs.snapshotOf(ref);
        if (id === undefined || !this.refs.acquire(ref)) throw new NotFoundError(`unknown input ref ${ref}`, { digest });
        held.push(ref);
        inputs.push(id);
      }
      // Every Run runs: the solver alone decides what is taken from its cache (keyed with what the op
      // needs, entitlements included), so a step it reruns (--no-cache) runs, and no earlier result of
      // an entitled step is handed to a request that was not granted the entitlement.
      const logger = this.logger.child({ buildId: req.buildId, vertex: digest });
      const ctx: OpContext = {
        snapshotter: this.snapshots,
        digest,
        inputs,
        signal: req.signal,
        logger,
        progress: new VertexProgress(this.o.publish, this.id, req.buildId, digest, logger),
      };
      logger.debug({ kind: op.op.case, description: req.description }, 'running op');
      let ids: OpResult;
      let contentDigest: string | undefined;
      let contentFiles: ContentFile[] | undefined;
      let contextCopy: (Omit<CachedContext, 'ref'> & { key: string }) | undefined;
      let reusedRef: string | undefined;
      try {
        ids = await this.dispatch(ctx, op, req, {
          onContentDigest: (d) => (contentDigest = d),
          onContentFiles: (f) => (contentFiles = f),
          onContextCopy: (c) => (contextCopy = c),
          onReusedRef: (r) => (reusedRef = r),
        });
      } catch (err) {
        if (reusedRef !== undefined) await this.release([reusedRef]);
        throw this.runError(err, op, req);
      }
      if (reusedRef !== undefined) {
        if (this.closed) {
          await this.release([reusedRef]);
          throw new KilnError('unavailable', `worker ${this.id} closed while running vertex ${digest}`);
        }
        const outputRefs = [reusedRef];
        return contentDigest === undefined ? { outputRefs } : { outputRefs, contentDigests: [contentDigest] };
      }
      for (const id of ids) this.snapshots.markOutput(id, req.description || undefined);
      if (this.closed) {
        for (const id of ids) if (!this.layers.owns(id)) await this.snapshots.remove(id).catch(() => undefined);
        throw new KilnError('unavailable', `worker ${this.id} closed while running vertex ${digest}`);
      }
      const outputRefs = ids.map((id) => this.refs.add(id));
      if (contextCopy) await this.localContexts.put(contextCopy.key, { ...contextCopy, ref: outputRefs[0]! });
      if (contentDigest === undefined) return { outputRefs };
      return { outputRefs, contentDigests: outputRefs.map(() => contentDigest!), ...(contentFiles ? { contentFiles } : {}) };
    } finally {
      await this.release(held);
    }
  }

  private async dispatch(ctx: OpContext, op: llb.Op, req: RunRequest, hooks: DispatchHooks): Promise<OpResult> {
    switch (op.op.case) {
      case 'source': {
        const { identifier, attrs } = op.op.value;
        if (identifier.startsWith('local://')) {
          const name = identifier.slice('local://'.length);
          const sharedKey = await this.sharedKeyOf(req.sessionId, name, ctx);
          const key = `${sharedKey}:${name}`;
          const base = sharedKey ? this.localContexts.take(key) : undefined;
          try {
            return await runLocalSource(ctx, {
              name,
              attrs,
              sessions: this.o.sessions,
              sessionId: req.sessionId,
              progressIntervalMs: this.o.progressIntervalMs,
              onContentDigest: hooks.onContentDigest,
              onContentFiles: hooks.onContentFiles,
              incremental: sharedKey
                ? {
                    base,
                    onCopy: (c) => hooks.onContextCopy({ ...c, key }),
                    // The reference `take` gave us is released below: the result takes one more.
                    onUnchanged: () => {
                      if (!base || !this.refs.acquire(base.ref)) return false;
                      hooks.onReusedRef(base.ref);
                      return true;
                    },
                  }
                : undefined,
            });
          } finally {
            if (base) await this.release([base.ref]);
          }
        }
        if (identifier.startsWith('docker-image://') || identifier.startsWith('oci-layout://')) {
          const p = op.platform;
          const platform = p?.os && p.architecture ? { os: p.os, architecture: p.architecture, ...(p.variant ? { variant: p.variant } : {}) } : this.o.platforms[0]!;
          const origin = identifier.startsWith('docker-image://')
            ? registryOrigin(this.registryFor(req.sessionId), identifier.slice('docker-image://'.length), this.o.content)
            : layoutOrigin(this.o.sessions, req.sessionId, identifier.slice('oci-layout://'.length));
          return runImageSource(ctx, {
            origin,
            platform,
            layers: this.layers,
            progressIntervalMs: this.o.progressIntervalMs,
            content: this.o.content,
            // A registry's layer can be fetched again after a restart; a client's OCI layout cannot.
            onBaseLayer: (id, layer) => this.snapshots.setBase(id, identifier.startsWith('docker-image://') ? { ...layer, origin: identifier } : layer),
          });
        }
        if (identifier.startsWith('https://') || identifier.startsWith('http://')) {
          return runHttpSource(ctx, { url: identifier, attrs, progressIntervalMs: this.o.progressIntervalMs });
        }
        if (identifier.startsWith('git://')) {
          return runGitSource(ctx, { identifier, attrs, sshForward: sshForwarder({ sessions: this.o.sessions, sessionId: req.sessionId }), logger: this.logger });
        }
        throw new UnimplementedError(`source ${identifier} is not supported yet by the ${this.o.backend} worker`, { identifier });
      }
      case 'file':
        return runFileOp(ctx, op.op.value);
      case 'exec':
        this.checkExecPlatform(op.platform);
        return runExecOp(ctx, op.op.value, {
          executor: this.o.executor,
          limiter: this.execLimiter,
          granted: req.entitlements ?? [],
          allowed: this.o.allowedEntitlements,
          noCache: req.noCache ?? false,
          buildId: req.buildId,
          sessions: this.o.sessions,
          sessionId: req.sessionId,
          stateDir: this.o.execStateDir,
          cacheMounts: this.cacheMounts,
          network: this.network,
          logger: this.logger,
        });
      case 'merge':
        return runMergeOp(ctx, op.op.value);
      case 'diff':
        throw new UnimplementedError(`${op.op.case} ops are not supported yet by the ${this.o.backend} worker`);
      default:
        throw new InvalidArgumentError('op has no kind (a terminal op is not run by workers)', 'op');
    }
  }

  /**
   * The registry client of one pull: the build's client session is asked
   * for credentials first (GetCredentials), the daemon's own store after.
   */
  private registryFor(sessionId: string): RegistryClient {
    const sessions = this.o.sessions;
    if (!sessionId || !sessions.getCredentials) return this.o.registry;
    return this.o.registry.withCredentials(sessionCredentials((host, signal) => sessions.getCredentials!({ sessionId, host }, { signal })));
  }

  /** How a base layer restored from the lineage records is fetched again when the content store lost its blob. */
  private refetchBase(b: StoredBaseLayer): BaseLayer['fetch'] {
    const { digest, size, mediaType } = b;
    if (b.origin?.startsWith('docker-image://')) {
      const origin = registryOrigin(this.o.registry, b.origin.slice('docker-image://'.length), undefined);
      return (signal) => origin.fetch({ digest, size, mediaType }, signal);
    }
    const content = this.o.content;
    return (signal) => (content ? readBlob(content, digest, signal) : noBlob(digest));
  }

  /** An exec op's platform must be one this worker runs (natively or emulated). */
  private checkExecPlatform(p: llb.Platform | undefined): void {
    if (!p?.os || !p.architecture) return;
    const ok = this.o.platforms.some((w) => w.os === p.os && w.architecture === p.architecture && (!w.variant || !p.variant || w.variant === p.variant));
    if (ok) return;
    const name = [p.os, p.architecture, p.variant].filter(Boolean).join('/');
    const have = this.o.platforms.map((w) => [w.os, w.architecture, w.variant].filter(Boolean).join('/')).join(', ');
    throw new KilnError('failed_precondition', `worker ${this.id} cannot run ${name} binaries (it runs ${have}): register an emulator with binfmt_misc (qemu-user-static)`, { platform: name });
  }

  /** The client's shared key of a session directory; '' (full transfer) when it has none or the relay cannot tell. */
  private async sharedKeyOf(sessionId: string, dirName: string, ctx: OpContext): Promise<string> {
    if (!this.o.sessions.describeDir) return '';
    try {
      return (await this.o.sessions.describeDir({ sessionId, dirName }, { signal: ctx.signal })).sharedKey;
    } catch (err) {
      if (ctx.signal?.aborted) throw err;
      ctx.logger.debug({ err, dir: dirName }, 'no shared key for a session directory: full transfer');
      return '';
    }
  }

  /** Cancellation stays CanceledError, unsupported features UnimplementedError; the rest becomes VertexError. */
  private runError(err: unknown, op: llb.Op, req: RunRequest): KilnError {
    const digest = req.vertexDigest;
    if (req.signal?.aborted || (err instanceof KilnError && err.code === 'canceled') || (err instanceof Error && err.name === 'AbortError')) {
      return err instanceof CanceledError ? err : new CanceledError(`vertex ${digest} canceled`, { cause: err });
    }
    if (err instanceof KilnError && err.code === 'unimplemented') {
      return new UnimplementedError(err.message, { ...err.details, digest });
    }
    if (err instanceof VertexError) return err;
    // Registry errors keep their code (not_found, unauthenticated, ...) and name the reference;
    // a missing entitlement stays permission_denied.
    if (err instanceof KilnError && (typeof err.details.reference === 'string' || typeof err.details.entitlement === 'string')) {
      return new KilnError(err.code, err.message, { ...err.details, digest }, { cause: err });
    }
    const message =
      err instanceof OpFailure || err instanceof KilnError ? err.message : `failed to run ${op.op.case ?? 'unknown'} op: ${reasonOf(err)}`;
    if (!(err instanceof OpFailure) && !(err instanceof KilnError)) {
      this.logger.error({ err, vertex: digest }, 'op failed unexpectedly');
    }
    return new VertexError(message, digest, err instanceof OpFailure ? err.details : {}, { cause: err });
  }

  async *exportRef(ref: string, opts: { signal?: AbortSignal } = {}): AsyncGenerator<Uint8Array> {
    const id = this.refs.snapshotOf(ref);
    if (id === undefined || !this.refs.acquire(ref)) throw new NotFoundError(`unknown ref ${ref}`);
    try {
      const view = await this.snapshots.view(id);
      try {
        yield* exportTree(view.path, opts);
      } finally {
        await view.release();
      }
    } finally {
      await this.release([ref]);
    }
  }

  async checksum(ref: string, selectors: readonly PathSelector[]): Promise<string> {
    const id = this.refs.snapshotOf(ref);
    if (id === undefined || !this.refs.acquire(ref)) throw new NotFoundError(`unknown ref ${ref}`);
    try {
      return await this.checksums.get(id, selectors, async () => {
        const manifest = this.localContexts.manifestOf(id);
        // A transferred file's digest was taken as it arrived: trust it while type and size agree.
        const known = manifest
          ? (rel: string, st: { size: number }) => {
              const e = manifest.get(rel);
              return e?.type === 'file' && e.size === st.size ? e.sha256 : undefined;
            }
          : undefined;
        const view = await this.snapshots.view(id);
        try {
          const h = createHash('sha256');
          for (const sel of selectors) h.update(`${await selectorChecksum(view.path, sel, known)}\n`);
          return `sha256:${h.digest('hex')}`;
        } finally {
          await view.release();
        }
      });
    } finally {
      await this.release([ref]);
    }
  }

  refFiles(ref: string): RefFiles {
    const withView = async <T>(fn: (root: string) => T): Promise<T> => {
      const id = this.refs.snapshotOf(ref);
      if (id === undefined || !this.refs.acquire(ref)) throw new NotFoundError(`unknown ref ${ref}`);
      try {
        const view = await this.snapshots.view(id);
        try {
          return fn(view.path);
        } finally {
          await view.release();
        }
      } finally {
        await this.release([ref]);
      }
    };
    return {
      read: (path, offset, length) => withView((root) => readRefFile(root, path, offset, length)),
      stat: (path) => withView((root) => statRefFile(root, path)),
      list: (path, pattern) => withView((root) => readRefDir(root, path, pattern)),
    };
  }

  async getLayers(ref: string, opts: GetLayersOptions = {}): Promise<LayerDescriptor[]> {
    if (this.closed) throw new KilnError('unavailable', `worker ${this.id} is closed`);
    const compression = opts.compression ?? 'gzip';
    const level = compressionLevel(compression, opts.compressionLevel ?? 0);
    if (opts.sourceDateEpoch !== undefined && !(Number.isSafeInteger(opts.sourceDateEpoch) && opts.sourceDateEpoch >= 0)) {
      throw new InvalidArgumentError(`source_date_epoch must be a whole number of seconds >= 0, got ${opts.sourceDateEpoch}`, 'source_date_epoch');
    }
    if (!this.layerMaker) throw new KilnError('failed_precondition', `worker ${this.id} has no content store to write layers to`);
    await this.lineageRestored;
    const id = this.refs.snapshotOf(ref);
    if (id === undefined || !this.refs.acquire(ref)) throw new NotFoundError(`unknown ref ${ref}`);
    try {
      return await this.layerMaker.layers(id, {
        compression,
        level,
        forceCompression: opts.forceCompression ?? false,
        ociMediaTypes: opts.ociMediaTypes ?? true,
        sourceDateEpoch: opts.sourceDateEpoch,
        lease: opts.lease ?? '',
        signal: opts.signal,
      });
    } catch (err) {
      if (opts.signal?.aborted && !(err instanceof CanceledError)) throw new CanceledError(`layers of ${ref} canceled`, { cause: err });
      throw err;
    } finally {
      await this.release([ref]);
    }
  }

  async importLayers(layers: readonly ImportedLayer[], opts: { signal?: AbortSignal } = {}): Promise<string> {
    if (this.closed) throw new KilnError('unavailable', `worker ${this.id} is closed`);
    if (!this.o.content) throw new KilnError('failed_precondition', `worker ${this.id} has no content store to import layers from`);
    throwIfAborted(opts.signal);
    await this.reaped;
    const id = await importLayerChain(layers, {
      snapshotter: this.snapshots,
      layers: this.layers,
      content: this.o.content,
      logger: this.logger,
      onLayer: (snapshotId, layer) => this.snapshots.setBase(snapshotId, layer),
      signal: opts.signal,
    });
    if (this.closed) throw new KilnError('unavailable', `worker ${this.id} closed while importing layers`);
    return this.refs.add(id);
  }

  async release(refs: readonly string[]): Promise<void> {
    await this.lineageRestored;
    for (const ref of refs) {
      const id = this.refs.release(ref);
      if (id === undefined) continue;
      if (!this.layers.owns(id)) {
        try {
          await this.snapshots.remove(id);
        } catch (err) {
          this.logger.warn({ err, ref, snapshot: id }, 'failed to remove snapshot of released ref');
        }
      }
      this.o.onRefGone?.(ref);
    }
  }

  async retain(refs: readonly string[], owner: string, opts: { ephemeral?: boolean } = {}): Promise<{ missing: string[] }> {
    if (!owner) throw new InvalidArgumentError('retain needs an owner', 'owner');
    await this.refsChecked;
    const missing: string[] = [];
    for (const ref of refs) {
      const id = this.refs.snapshotOf(ref);
      if (id === undefined) missing.push(ref);
      else if (this.o.retainedRefs.add(ref, id, owner, opts.ephemeral ?? false)) this.refs.acquire(ref);
    }
    return { missing };
  }

  async drop(refs: readonly string[], owner: string): Promise<void> {
    const released = refs.filter((ref) => this.o.retainedRefs.remove(ref, owner));
    await this.release(released);
  }

  async refUsage(refs: readonly string[]): Promise<RefUsage[]> {
    const out: RefUsage[] = [];
    for (const ref of refs) {
      const id = this.refs.snapshotOf(ref);
      const usage = id === undefined ? undefined : await this.snapshots.usage(id).catch(() => undefined);
      out.push({ ref, found: usage !== undefined, sizeBytes: usage?.sizeBytes ?? 0, owners: this.o.retainedRefs.owners(ref) });
    }
    return out;
  }

  releaseIdle(): Promise<void> {
    return this.network.releaseIdle();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopping.abort(new CanceledError(`worker ${this.id} is closing`));
    await this.reaped;
    await settledWithin([...this.inflight], CLOSE_GRACE_MS);
    await this.network.close();
    // Layer snapshots persist (labeled by chain id) for the next worker on this root; so do those of persistently retained refs.
    this.localContexts.clear();
    const kept = new Set([...this.layers.clear(), ...this.o.retainedRefs.persistedSnapshots()]);
    for (const id of new Set(this.refs.clear())) if (!kept.has(id)) await this.snapshots.remove(id).catch(() => undefined);
    this.o.retainedRefs.close();
    await this.layerMaker?.close();
    await this.snapshots.close().catch(() => undefined);
  }
}

/** A blob nothing can fetch again. */
async function* noBlob(digest: string): AsyncGenerator<Uint8Array> {
  throw new NotFoundError(`layer blob ${digest} is not in the content store`, { digest });
}

/** How long close() waits for canceled runs to clean up (kill their containers, unmount). */
const CLOSE_GRACE_MS = 5_000;

/** Waits until every promise settled, or `ms` passed. */
async function settledWithin(promises: Promise<unknown>[], ms: number): Promise<void> {
  if (promises.length === 0) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([Promise.allSettled(promises), new Promise((r) => (timer = setTimeout(r, ms)))]);
  clearTimeout(timer);
}

/** A signal aborted by either input (with its reason); dispose() drops the listeners. */
function linkSignals(a: AbortSignal | undefined, b: AbortSignal): { signal: AbortSignal; dispose: () => void } {
  const ac = new AbortController();
  const inputs = a ? [a, b] : [b];
  const listeners = inputs.map((s) => {
    const onAbort = () => ac.abort(s.reason);
    if (s.aborted) onAbort();
    else s.addEventListener('abort', onAbort, { once: true });
    return () => s.removeEventListener('abort', onAbort);
  });
  return { signal: ac.signal, dispose: () => listeners.forEach((off) => off()) };
}
