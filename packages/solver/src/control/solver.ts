import { create, toBinary, type MessageInitShape } from '@bufbuild/protobuf';
import { timestampNow } from '@bufbuild/protobuf/wkt';
import type { Client } from '@connectrpc/connect';
import { control, events, exporter, frontend, type content, type llb } from '@kiln/api';
import { BUILD_EVENT_STREAM, subjectToken, type EventBus, type EventStream, type EventStreamLimits } from '@kiln/bus';
import { asKilnError, InvalidArgumentError, KilnError, NotFoundError, sha256, TransportError, UnavailableError, UnimplementedError, walkPostOrder, type ErrorCode, type Logger } from '@kiln/common';
import { parseDefinition, type ParsedDefinition } from '@kiln/llb';
import { createRegistryClient, formatPlatform, type RegistryClient } from '@kiln/registry';
import { buildRegistryClient } from './build-registry.js';
import { mkdirSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import type { BuiltVertex } from '../cache/cache-export.js';
import { CacheImports } from '../cache/cache-import.js';
import { CacheStore } from '../cache/cache-store.js';
import { openSolverDatabase, type Database } from '../cache/sqlite.js';
import { Scheduler, type GraphNode, type SchedulerSession } from '../graph/scheduler.js';
import { bypassesCache, isLocalSource, localSourceCacheKey, opCacheKey, selectedContentKey } from '../llb/cache-keys.js';
import { inputSelectors } from '../llb/input-selectors.js';
import { definitionKeys, outputKey } from '../llb/definition-keys.js';
import { predictedKeysByDigest } from '../llb/predicted-keys.js';
import { toGraph, toPlacedGraph, type LlbVertex, type OpResult, type RunOp, type Shortcut } from '../llb/vertices.js';
import type { SessionHost } from '../session/session-host.js';
import { compileCacheExports, compileCacheImports, exportCache, loadCacheImports, withInlineCache, type CacheExportDeps } from './build-cache.js';
import { BuildRecords, toStatusResponse } from './build-records.js';
import { WorkerProgressRelay } from './worker-progress-relay.js';
import { HISTORY_MAX_EVENT_BYTES, HistoryStore } from '../history/history-store.js';
import { checkImportedBuild } from '../history/import-check.js';
import { BuildExplainer, buildIdentity } from '../explain/build-explainer.js';
import { StepStore } from '../explain/step-store.js';
import { stepSites, type StepSite } from '../explain/step-record.js';
import { vertexStep } from '../explain/vertex-step.js';
import { CacheUsage, planCachePrune, pruneKeepBytes } from './cache-usage.js';
import { ContentUsage } from './content-usage.js';
import { checkDefinitionEntitlements, grantEntitlements } from './entitlements.js';
import { constraintFilters, fittingWorkers, pickWorker } from './pick-worker.js';
import { matchesAll, parseWorkerFilters, type WorkerFilter } from './worker-filter.js';
import { compileUsageFilter } from './usage-filter.js';
import { VertexCache, type CacheHit } from './vertex-cache.js';
import { placeSteps } from './step-placement.js';
import { workOn, type Work } from './placement-cost.js';
import { BuildGateways } from './build-gateway.js';
import { buildProvenance, provenanceMode } from './provenance.js';
import { resultSbom, SBOM_EXPORTERS, sbomRequested } from './sbom.js';
import { solveWithFrontend } from './frontend-routing.js';
import type { WorkerHandle, WorkerPool } from './workers.js';
import { isConnectionLost, namedTier, namedWorkerPool } from './tier-clients.js';

export interface SolverOptions {
  bus: EventBus;
  logger: Logger;
  sessions: SessionHost;
  /**
   * A frontend instance serving `name` ("dockerfile.v0", or a name a
   * pluggable frontend announced), resolved per build so frontends may start
   * after the solver. Throws NotFoundError naming the frontends offered when
   * none serves `name`.
   */
  frontend: (name: string) => Promise<Client<typeof frontend.FrontendService>>;
  exporters: () => Promise<Client<typeof exporter.ExporterService>>;
  workers: WorkerPool;
  /** The content store tier, for disk usage and prune (absent: both answer unimplemented). */
  content?: () => Promise<Client<typeof content.ContentService>>;
  /** State directory (the cache database); absent: an in-memory cache that ends with the process. */
  root?: string;
  /** Most ops running at once (default 64; kilnd passes --max-parallelism). */
  maxParallelism?: number;
  version?: string;
  tiers?: string[];
  /** The daemon's GC policy, reported by ListWorkers (kilnd's `[gc]` config). */
  gcPolicy?: { keepBytes?: number; keepDurationMs?: number };
  /**
   * Where registry caches are pushed to and pulled from (`--cache-to/--cache-from type=registry`), and the
   * gateway's image lookups; each build derives a client with its session's credentials. Default `createRegistryClient({})`.
   */
  registry?: RegistryClient;
  /**
   * Entitlements this daemon permits builds to ask for (`--allow`; kilnd's
   * `entitlements`). Default none. The solver alone decides what a build is
   * granted: workers run with the list it sends.
   */
  allowedEntitlements?: readonly string[];
  /** Retention of the build event stream (kilnd's `[events]`); default 24 h and 1 GiB. */
  eventStream?: EventStreamLimits;
  /** This solver's id (`kiln daemon --id`): names its reader on the build event stream. */
  instanceId?: string;
  /** After a NATS outage, how long a finishing build waits for workers' progress to catch up; default 90 s. */
  progressCatchUpMs?: number;
  /**
   * How builds are placed among the fitting workers: "cache" (default) goes
   * where the most of the build's steps are cached, traded against load
   * (see pickWorker); "load" takes the least busy worker.
   */
  placement?: 'cache' | 'load';
}

const DEFAULT_PROGRESS_CATCH_UP_MS = 90_000;

type VertexInit = MessageInitShape<typeof events.VertexSchema>;

/**
 * The solver: runs a build from a frontend request or an LLB definition to
 * exported outputs. Vertex progress is published on `kiln.build.<id>.vertex`;
 * workers publish logs and transfer status on the same subject tree.
 */
export class Solver {
  private readonly scheduler: Scheduler<OpResult>;
  private readonly records: BuildRecords;
  private readonly relay: WorkerProgressRelay;
  /** The build event stream: the solver's events go there, workers' progress is read from it. */
  private readonly eventStream: EventStream;
  private readonly streamReady: Promise<void>;
  private readonly active = new Set<string>();
  private readonly db: Database;
  private readonly cache: VertexCache;
  private registryClient: RegistryClient | undefined;
  private readonly history: HistoryStore;
  /** Per build, the inputs of each step's key and its cache-miss explanations (`--explain-cache`). */
  private readonly steps: StepStore;
  private dashboardUrl: string | undefined;
  private readonly cacheUsage: CacheUsage;
  /** Builds running on each worker (by id), for spreading builds. */
  private readonly load = new Map<string, number>();

  /** Frontends' calls back into their builds (GatewayService). */
  readonly gateways: BuildGateways;
  private readonly opts: SolverOptions;

  constructor(options: SolverOptions) {
    // Every tier client is named at this boundary, so a tier that dies or restarts mid-build shows up by name.
    const opts = (this.opts = {
      ...options,
      workers: namedWorkerPool(options.workers),
      frontend: namedTier(options.frontend, (name) => `frontend "${name}"`),
      exporters: namedTier(options.exporters, () => 'exporters tier'),
      content: options.content && namedTier(options.content, () => 'content tier'),
    });
    if (opts.root) mkdirSync(opts.root, { recursive: true });
    this.db = openSolverDatabase(opts.root ? join(opts.root, 'solver.db') : ':memory:');
    this.history = new HistoryStore(this.db);
    this.steps = new StepStore(this.db);
    this.records = new BuildRecords((buildId, evs) => {
      try {
        this.history.finish(buildId, evs);
        this.steps.pruneOrphans();
      } catch (err) {
        opts.logger.warn({ err, buildId }, 'failed to record build history');
      }
    });
    this.eventStream = opts.bus.eventStream(BUILD_EVENT_STREAM.name, BUILD_EVENT_STREAM.subjects);
    this.streamReady = this.eventStream.ensure(opts.eventStream);
    this.streamReady.catch(() => {}); // reported by ready() and the relay
    // Workers' step output and transfer status enter a build only through the relay.
    this.relay = new WorkerProgressRelay(this.eventStream, (ev) => this.records.add(ev), opts.logger.child({ component: 'progress-relay' }), {
      readerName: `solver-${subjectToken(opts.instanceId ?? 'solver')}`,
      ready: this.streamReady,
    });
    this.cache = new VertexCache(new CacheStore(this.db), opts.workers, opts.logger.child({ component: 'cache' }), opts.content);
    this.cacheUsage = new CacheUsage(this.cache, opts.workers);
    this.gateways = new BuildGateways(opts.workers, () => this.registry, opts.sessions);
    this.scheduler = new Scheduler<OpResult>({
      maxParallelism: opts.maxParallelism ?? 64,
      release: async (r) => {
        const w = await opts.workers.get(r.workerId);
        const refs = r.refs.filter(Boolean);
        const done = r.holdOwner ? w?.client.drop({ refs, owner: r.holdOwner }) : w?.client.release({ refs });
        await done?.catch((err: unknown) => opts.logger.warn({ err }, 'failed to release refs'));
      },
    });
  }

  /**
   * Resolves once the build event stream is set up (on NATS: the JetStream
   * stream exists with the configured limits) and this solver reads the
   * workers' progress from it. Rejects with the reason it cannot be
   * (JetStream disabled, no permission): a split solver must not run
   * without it.
   */
  async ready(timeoutMs = 20_000): Promise<void> {
    await this.streamReady;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new UnavailableError(`failed to start reading workers' progress from the build event stream within ${timeoutMs} ms (see the progress-relay log lines)`)), timeoutMs);
    });
    try {
      await Promise.race([this.relay.reading, this.relay.done.then(() => this.relay.reading), late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** `client`: who asked, as the transport proved it (kept in the build's history record). */
  async solve(req: control.SolveRequest, signal: AbortSignal, client?: string): Promise<control.SolveResponse> {
    const buildId = req.ref;
    const startedMs = Date.now();
    if (!/^[A-Za-z0-9_-]{1,128}$/.test(buildId)) throw new InvalidArgumentError(`invalid build ref "${buildId}"`, 'ref');
    if (this.active.has(buildId)) throw new KilnError('already_exists', `build ${buildId} is already running`);
    this.active.add(buildId);
    const log = this.opts.logger.child({ buildId });
    // The frontend's gateway solves run here; each attempt on a worker gets a session of its own (see attemptOn).
    const session = this.scheduler.session(signal);
    const publish = async (ev: MessageInitShape<typeof events.BuildEventSchema>['event']) => this.publishBuildEvent(create(events.BuildEventSchema, { buildId, event: ev }));
    const defs: ParsedDefinition[] = [];
    let imports: CacheImports | undefined;
    const claimed = new Set<string>();
    let closeGateway: (() => void) | undefined;
    let explainer: BuildExplainer | undefined;
    this.history.start({ ref: buildId, frontend: req.frontend, frontendAttrs: req.frontendAttrs, exporters: req.exporters.map((e) => e.type), createdAtMs: Date.now(), ...(client ? { client } : {}) });
    try {
      const granted = grantEntitlements(req.entitlements, new Set(this.opts.allowedEntitlements ?? []));
      const cacheExports = compileCacheExports(req.cacheExports);
      const cacheImports = compileCacheImports(req.cacheImports);
      const requested = parseWorkerFilters(req.workerFilter, '--worker-filter');
      let targets: BuildTarget[] = [{ platform: '', definition: req.definition, imageConfig: new Uint8Array() }];
      let sourceDateEpoch: string | undefined;
      if (req.frontend) {
        const attrs = await this.withBuildPlatform(req.frontendAttrs, requested);
        closeGateway = this.gateways.open(buildId, {
          sessionId: req.sessionId,
          solve: (definition, sig) => this.gatewaySolve({ buildId, sessionId: req.sessionId, publish, granted, requested, noCache: req.frontendAttrs['no-cache'], session, claimed }, definition, sig),
        });
        const res = await this.step(publish, internalVertex(buildId, `[internal] load build definition from ${req.frontendAttrs['filename'] ?? 'Dockerfile'}`), () =>
          solveWithFrontend(this.opts.frontend, { buildId, sessionId: req.sessionId, frontend: req.frontend, attrs }, signal),
        );
        targets = res.platformResults.length > 0 ? res.platformResults : [{ platform: '', definition: res.definition, imageConfig: res.imageConfig }];
        sourceDateEpoch = res.metadata[SOURCE_DATE_EPOCH_METADATA] || undefined;
        for (const w of res.warnings) await publish({ case: 'warning', value: w });
        if (req.frontendAttrs['requestid']) {
          // A subrequest (buildx --call): the frontend's metadata is the answer; nothing is built.
          this.history.setExporterResponse(buildId, res.metadata);
          await publish({ case: 'done', value: {} });
          return create(control.SolveResponseSchema, { exporterResponse: res.metadata });
        }
      }
      for (const t of targets) {
        if (!t.definition) throw new InvalidArgumentError('solve needs a frontend or a definition', 'frontend');
        defs.push(parseDefinition(t.definition));
      }
      // Before anything resolves: a cached result of an entitled step must not reach a build without the entitlement.
      checkDefinitionEntitlements(defs, granted);
      const filters = [...requested, ...parseWorkerFilters(constraintFilters(defs), 'constraints')];
      const work = await this.placementWork(defs, req.frontendAttrs['no-cache'], signal);
      // Picked and counted in one step, so builds arriving together spread.
      const choose = async (exclude?: ReadonlySet<string>) => {
        const w = pickWorker(await this.opts.workers.list(), defs, { filters, load: (id) => this.load.get(id) ?? 0, work, exclude });
        const chosen = work?.(w.id);
        log.info({ worker: w.id, cachedSteps: chosen?.held ?? 0, workMs: Math.round(chosen?.ms ?? 0), load: this.load.get(w.id) ?? 0 }, 'build placed');
        this.claim(w.id, claimed, +1);
        this.history.addWorker(buildId, w.id);
        this.relay.allow(buildId, w.id);
        return w;
      };
      const worker = await choose();
      if (cacheImports.length > 0) {
        const loaded = await this.step(publish, internalVertex(buildId, 'importing cache manifests'), () =>
          loadCacheImports(cacheImports, buildRegistryClient(this.registry, this.opts.sessions, req.sessionId, signal), importPlatform(defs[0]!, worker), log.child({ component: 'cache-import' }), signal),
        );
        imports = new CacheImports(loaded, this.opts.content, log.child({ component: 'cache-import' }));
      }
      explainer = new BuildExplainer(this.steps, buildId, await this.buildIdentity(req), req.frontendAttrs['no-cache']);
      const placedOn = new Map<string, WorkerHandle>();
      const useWorker = (w: WorkerHandle) => {
        placedOn.set(w.id, w);
        this.claim(w.id, claimed, +1);
        this.history.addWorker(buildId, w.id);
        this.relay.allow(buildId, w.id);
      };
      const plan: Omit<BuildPlan, 'session' | 'signal'> = { req, granted: [...granted], defs, targets, cacheExports, imports, publish, log, sourceDateEpoch, startedMs, explainer, filters, exclude: new Set(), claimed, useWorker, placedOn };
      let response: Record<string, string>;
      try {
        response = await this.attemptOn(worker, plan, signal);
      } catch (err) {
        // The build's worker, or one a branch of its steps ran on (see placeSteps).
        const lost = signal.aborted ? undefined : await this.lostWorker([worker, ...[...placedOn.values()].filter((w) => w.id !== worker.id)], err);
        if (!lost) throw err;
        const reason = lostReason(lost.id, err);
        // Another worker runs the build again: what its cache holds (or other live workers can hand it) is reused.
        const exclude = new Set([lost.id]);
        const other = lost.id === worker.id ? await choose(exclude).catch(() => undefined) : worker;
        if (!other) {
          throw new KilnError('unavailable', `worker "${lost.id}" was lost (${reason}) and no other fitting worker is available to retry the build`, { worker: lost.id }, { cause: err });
        }
        this.claim(lost.id, claimed, -1);
        const message = `worker "${lost.id}" was lost (${reason}); retrying the build on worker "${other.id}"`;
        log.warn({ failed: lost.id, retry: other.id, err: reason }, 'worker lost: retrying the build on another worker');
        await publish({ case: 'warning', value: { level: 1n, short: new TextEncoder().encode(message) } });
        response = await this.attemptOn(other, { ...plan, exclude }, signal);
      }
      this.history.setExporterResponse(buildId, response);
      await this.settleProgress(buildId, signal, log);
      await publish({ case: 'done', value: {} });
      log.info('build done');
      return create(control.SolveResponseSchema, { exporterResponse: response });
    } catch (err) {
      const e = locate(asKilnError(err), defs);
      await this.settleProgress(buildId, signal, log);
      await publish({ case: 'done', value: { error: e.message, errorCode: e.code } }).catch(() => undefined);
      log.info({ err: e.message, code: e.code }, 'build failed');
      throw e;
    } finally {
      closeGateway?.();
      try {
        explainer?.save();
      } catch (err) {
        log.warn({ err }, 'failed to record the build steps for cache-miss explanations');
      }
      for (const id of claimed) this.claim(id, claimed, -1);
      this.active.delete(buildId);
      await session.close();
      // The history row is finished from the done event; let it land before Solve answers.
      await this.records.settled(buildId, 2000);
      this.relay.end(buildId);
    }
  }

  /**
   * One attempt of the worker-bound part of a build on `worker`, in its own
   * scheduler session (its results are let go when it ends). While it runs,
   * the worker is watched in the directory: one that stops announcing (a
   * hung or partitioned worker, whose calls may never fail) ends the
   * attempt as lost, like a cut connection does.
   */
  private async attemptOn(worker: WorkerHandle, p: Omit<BuildPlan, 'session' | 'signal'>, signal: AbortSignal): Promise<Record<string, string>> {
    const lost = new AbortController();
    const sig = AbortSignal.any([signal, lost.signal]);
    const session = this.scheduler.session(sig);
    let probing = false;
    const watch = setInterval(() => {
      if (probing || lost.signal.aborted) return;
      probing = true;
      // Gone from the directory and not answering Describe either: lost (a directory alone may be stale).
      // The workers branches of the build run on are watched as its own is.
      this.firstGone([worker, ...[...p.placedOn.values()].filter((w) => w.id !== worker.id && !p.exclude.has(w.id))])
        .then((gone) => {
          if (gone && !lost.signal.aborted) lost.abort(new TransportError('unavailable', `worker "${gone.id}" left the cluster directory and does not answer`));
        })
        .catch(() => undefined)
        .finally(() => (probing = false));
    }, WORKER_WATCH_MS);
    try {
      return await this.buildOn(worker, { ...p, session, signal: sig });
    } catch (err) {
      if (lost.signal.aborted && !signal.aborted) throw lost.signal.reason;
      throw err;
    } finally {
      clearInterval(watch);
      await session.close();
    }
  }

  /**
   * The worker-bound part of a build on `worker`: the graphs (one per
   * target platform), inline cache, exporters and cache exports. Returns the
   * exporters' response.
   */
  private async buildOn(worker: WorkerHandle, p: BuildPlan): Promise<Record<string, string>> {
    const { req, defs, publish } = p;
    const buildId = req.ref;
    p.log.info({ worker: worker.id }, 'build runs on worker');
    const built = new Map<string, BuiltVertex>();
    const sites = new Map<string, StepSite>();
    for (const def of defs) for (const [d, site] of stepSites(def, (x) => def.ops.get(x as never)?.metadata?.description ?? x)) sites.set(d, site);
    const explain = { explainer: p.explainer, sites };
    const build: BuildContext = { publish, buildId, sessionId: req.sessionId, noCache: req.frontendAttrs['no-cache'], entitlements: p.granted, imports: p.imports, built, explain, brought: [] };
    try {
      return await this.buildGraphsOn(worker, p, build);
    } finally {
      await Promise.all(build.brought.map((h) => this.cache.releaseHit(h).catch(() => undefined)));
    }
  }

  /**
   * Where each step of a single-platform build runs when its branches are
   * better off on other workers (see placeSteps); undefined when all run on
   * `worker` (one fitting worker, placement by load, cache imports or
   * exports, which describe one worker's results). Claims the other
   * workers for the build.
   */
  private async placeBuildSteps(worker: WorkerHandle, p: BuildPlan): Promise<{ place: Map<string, string>; workers: Map<string, WorkerHandle> } | undefined> {
    const def = p.defs[0];
    if (this.opts.placement === 'load' || p.defs.length !== 1 || !def?.result || p.imports || p.cacheExports.length > 0) return undefined;
    let fitting: WorkerHandle[];
    try {
      fitting = fittingWorkers(await this.opts.workers.list(), p.defs, { filters: p.filters, exclude: p.exclude });
    } catch {
      return undefined;
    }
    if (fitting.length < 2 || !fitting.some((w) => w.id === worker.id)) return undefined;
    const predicted = predictedKeysByDigest(def, p.req.frontendAttrs['no-cache']);
    const costs = await this.cache.placementCosts([...predicted.values()], fitting, p.signal);
    const place = placeSteps({
      def,
      buildWorker: worker.id,
      workers: fitting.map((w) => w.id),
      predicted,
      costs,
      moveMs: this.cache.pullFixedMs(),
      load: (id) => (this.load.get(id) ?? 0) - (p.claimed.has(id) ? 1 : 0),
    });
    const counts = new Map<string, number>();
    for (const id of place.values()) counts.set(id, (counts.get(id) ?? 0) + 1);
    if ([...counts.keys()].every((id) => id === worker.id)) return undefined;
    const workers = new Map(fitting.map((w) => [w.id, w]));
    for (const id of counts.keys()) if (id !== worker.id) p.useWorker(workers.get(id)!);
    p.log.info({ worker: worker.id, steps: Object.fromEntries(counts) }, 'build steps placed on several workers');
    return { place, workers };
  }

  /** The graphs of buildOn, run and exported. */
  private async buildGraphsOn(worker: WorkerHandle, p: BuildPlan, build: BuildContext): Promise<Record<string, string>> {
    const { req, defs, publish, signal } = p;
    const buildId = req.ref;
    const built = build.built;
    let targets = p.targets;
    const placed = await this.placeBuildSteps(worker, p);
    // One graph per target platform; ops they share (same key) run once in this session.
    const resultRefs = await Promise.all(
      defs.map(async (def) => {
        if (!def.result) return '';
        if (placed) {
          // A branch worker counts as busy with this build only until the last of its steps ends (its results then wait to be brought over).
          const left = new Map<string, number>();
          const stepEnded = (id: string) => {
            const n = (left.get(id) ?? 1) - 1;
            left.set(id, n);
            if (n === 0 && id !== worker.id) this.claim(id, p.claimed, -1);
          };
          const { result, nodes } = toPlacedGraph(
            def,
            { session: req.sessionId, build: buildId },
            (id) => (v, inputs, sig) => this.runVertex(build, placed.workers.get(id) ?? worker, v, inputs, sig).finally(() => stepEnded(id)),
            worker.id,
            placed.place,
          );
          for (const n of nodes.values()) left.set(n.workerId, (left.get(n.workerId) ?? 0) + 1);
          const out = await p.session.resolve(result!);
          return out.refs[def.result.index] ?? '';
        }
        const runOp: RunOp = (v, inputs, sig) => this.runVertex(build, worker, v, inputs, sig);
        let graph = toGraph(def, { session: req.sessionId, build: buildId }, runOp, worker.id);
        const shortcuts = await this.importShortcuts(build, worker, def, graph, p.session);
        if (shortcuts.size > 0) graph = toGraph(def, { session: req.sessionId, build: buildId }, runOp, worker.id, shortcuts);
        const out = await p.session.resolve(graph.get(def.result.digest)!);
        return out.refs[def.result.index] ?? '';
      }),
    );
    const finals = defs.map((def) => (def.result ? { digest: def.result.digest as string, index: def.result.index } : undefined));
    if (p.cacheExports.length > 0 && defs[0]) {
      // Exported records carry definition keys, so an importer can skip the steps below a record (mode=min).
      const dkeys = definitionKeys(defs[0], (d) => built.get(d)?.key);
      for (const [d, v] of built) {
        const k = dkeys.get(d as never);
        if (k) v.definitionKey = k;
      }
    }
    // Cache exports describe the first platform's result.
    const final = finals[0];
    if (p.cacheExports.some((c) => c.type === 'inline')) {
      const deps = this.cacheDeps(p.log, req.sessionId, signal);
      targets = await this.step(publish, internalVertex(buildId, 'preparing inline cache'), () =>
        Promise.all(targets.map(async (t, i) => ({ ...t, imageConfig: await withInlineCache(t.imageConfig, built, finals[i], deps, signal) }))),
      );
    }
    const platforms = targets.length > 1 ? targets.map((t, i) => ({ platform: t.platform, workerId: worker.id, ref: resultRefs[i]!, imageConfig: t.imageConfig })) : [];
    const response: Record<string, string> = {};
    // --provenance / --attest type=provenance: the predicate image outputs attach (see provenance.ts).
    const mode = provenanceMode(req.frontendAttrs['attest:provenance']);
    const provenance = mode
      ? Buffer.from(
          JSON.stringify(
            buildProvenance({ buildId, frontend: req.frontend, frontendAttrs: req.frontendAttrs, defs: p.defs, platforms: targets.map((t) => t.platform), startedMs: p.startedMs, finishedMs: Date.now(), mode }),
          ),
        )
      : new Uint8Array();
    // --sbom / --attest type=sbom: an SPDX document per platform's result, which image and oci outputs attach
    // and local/tar outputs write as sbom.spdx.json (see sbom.ts).
    const sboms =
      sbomRequested(req.frontendAttrs['attest:sbom']) && req.exporters.some((e) => SBOM_EXPORTERS.has(e.type))
        ? await this.step(publish, internalVertex(buildId, 'generating sbom using the kiln-sbom scanner'), () =>
            Promise.all(
              resultRefs.map((ref, i) =>
                resultSbom(worker.client, ref, {
                  name: targets[i]!.platform ? `image (${targets[i]!.platform})` : 'image',
                  ...(p.sourceDateEpoch ? { created: new Date(Number(p.sourceDateEpoch) * 1000) } : {}),
                  signal,
                }),
              ),
            ),
          )
        : [];
    const platformsWithSbom = platforms.map((pl, i) => (sboms[i] ? { ...pl, sbom: sboms[i] } : pl));
    for (const [i, exp] of req.exporters.entries()) {
      const res = await this.step(publish, internalVertex(buildId, `exporting to ${exp.type}`, i), async () => {
        const client = await this.opts.exporters();
        const first = { workerId: worker.id, ref: resultRefs[0]!, imageConfig: targets[0]!.imageConfig, ...(sboms[0] && platforms.length === 0 ? { sbom: sboms[0] } : {}) };
        return client.export({ buildId, sessionId: req.sessionId, type: exp.type, attrs: exporterAttrs(exp, p.sourceDateEpoch), ...first, platforms: platformsWithSbom, provenance }, { signal });
      });
      Object.assign(response, res.response);
    }
    // buildx's metadata key for the provenance predicate (base64 JSON: the CLI's metadata file inlines it).
    if (provenance.length > 0) response['buildx.build.provenance'] = Buffer.from(provenance).toString('base64');
    for (const [i, target] of p.cacheExports.entries()) {
      if (target.type === 'inline') continue;
      const deps = this.cacheDeps(p.log, req.sessionId, signal);
      const name = target.type === 'registry' ? `exporting cache to registry ${target.ref}` : `exporting cache to ${target.dest}`;
      const res = await this.step(publish, internalVertex(buildId, name, i), () => exportCache(target, built, final, deps, signal));
      p.log.info({ cache: name, digest: res.digest, records: res.records }, 'cache exported');
      response[`cache.${i}.digest`] = res.digest;
    }
    return response;
  }

  /**
   * A definition a frontend solves through the gateway while its build runs:
   * checked against the build's entitlements, placed like a build (filters,
   * platforms, load) and run in the build's scheduler session, so its steps
   * show in the build's progress and the final definition reuses them.
   */
  private async gatewaySolve(g: GatewaySolveContext, definition: llb.Definition, signal: AbortSignal): Promise<{ workerId: string; ref: string }> {
    const def = parseDefinition(definition);
    checkDefinitionEntitlements([def], g.granted);
    if (!def.result) return { workerId: '', ref: '' };
    const filters = [...g.requested, ...parseWorkerFilters(constraintFilters([def]), 'constraints')];
    const worker = pickWorker(await this.opts.workers.list(), [def], { filters, load: (id) => this.load.get(id) ?? 0, work: await this.placementWork([def], g.noCache, signal) });
    this.claim(worker.id, g.claimed, +1);
    this.relay.allow(g.buildId, worker.id);
    const build: BuildContext = { publish: g.publish, buildId: g.buildId, sessionId: g.sessionId, noCache: g.noCache, entitlements: [...g.granted], imports: undefined, built: new Map(), brought: [] };
    const graph = toGraph(def, { session: g.sessionId, build: g.buildId }, (v, inputs, sig) => this.runVertex(build, worker, v, inputs, sig), worker.id);
    void signal; // the build's own signal cancels its steps
    const out = await g.session.resolve(graph.get(def.result.digest)!);
    return { workerId: out.workerId, ref: out.refs[def.result.index] ?? '' };
  }

  /**
   * Records a build event (Status and history read the records) and
   * stores it in the build event stream on `kiln.build.<id>.<kind>` for
   * other observers. The bus is not in the way: while NATS is down the event
   * is recorded at once and the stream's outbox keeps it until NATS is back.
   */
  private async publishBuildEvent(ev: events.BuildEvent): Promise<void> {
    this.records.add(ev);
    try {
      await this.eventStream.publish(`kiln.build.${ev.buildId}.${ev.event.case ?? 'event'}`, toBinary(events.BuildEventSchema, ev));
    } catch (err) {
      this.opts.logger.debug({ err, buildId: ev.buildId }, 'failed to publish a build event on the bus (recorded anyway)');
    }
  }

  /**
   * Before a build's done event: after a NATS outage or a broken connection,
   * waits (bounded by `progressCatchUpMs`) until the workers' progress kept
   * meanwhile is stored and relayed, so the client and the history get the
   * step output of the outage. Costs nothing while the connection is sound
   * or on the in-process bus. A canceled build does not wait.
   */
  private async settleProgress(buildId: string, signal: AbortSignal, log: Logger): Promise<void> {
    if (signal.aborted) return;
    const started = Date.now();
    const settled = await this.eventStream.settle(this.opts.progressCatchUpMs ?? DEFAULT_PROGRESS_CATCH_UP_MS);
    const waitedMs = Date.now() - started;
    if (!settled) log.warn({ buildId, waitedMs }, 'workers\' progress did not catch up after a NATS outage; finishing the build without the rest');
    else if (waitedMs > 50) log.info({ buildId, waitedMs }, 'waited for workers\' progress to catch up after a NATS outage');
  }

  /**
   * Per worker, the work the definitions' predicted steps are there (ms to
   * run or pull those it does not hold, and how many it holds; see
   * placement-cost.ts), for cache-aware placement (undefined with
   * `placement = "load"`). Only keys known before anything runs count (see
   * predictedCacheKeys), and no sources: every worker resolves those
   * itself (a base image shared by all projects says nothing of where a
   * project's cache is).
   */
  private async placementWork(defs: readonly ParsedDefinition[], noCache: string | undefined, signal?: AbortSignal): Promise<((workerId: string) => Work) | undefined> {
    if (this.opts.placement === 'load') return undefined;
    const keys = defs.flatMap((d) => [...predictedKeysByDigest(d, noCache)].filter(([digest]) => d.ops.get(digest as never)?.op.op.case !== 'source').map(([, k]) => k));
    const costs = await this.cache.placementCosts(keys, await this.opts.workers.list(), signal);
    return (id) => workOn(keys, costs, id);
  }

  /** Counts a build on (`+1`) or off (`-1`) a worker; `claimed` is the build's own set, so each is counted off once. */
  private claim(workerId: string, claimed: Set<string>, delta: 1 | -1): void {
    if (delta > 0 ? claimed.has(workerId) : !claimed.delete(workerId)) return;
    if (delta > 0) claimed.add(workerId);
    const n = (this.load.get(workerId) ?? 0) + delta;
    if (n > 0) this.load.set(workerId, n);
    else this.load.delete(workerId);
  }

  /**
   * Whether `err` came from losing `worker` rather than from the build
   * itself (a failing RUN, a bad Dockerfile): a transport-like error while
   * the worker has left the pool or no longer answers Describe.
   */
  /** The first of `workers` whose loss `err` came from (see workerLost). */
  private async lostWorker(workers: readonly WorkerHandle[], err: unknown): Promise<WorkerHandle | undefined> {
    for (const w of workers) if (await this.workerLost(w, err)) return w;
    return undefined;
  }

  private async workerLost(worker: WorkerHandle, err: unknown): Promise<boolean> {
    if (!isConnectionLost(err) && !TRANSIENT_CODES.has(asKilnError(err).code)) return false;
    if (!(await this.opts.workers.get(worker.id))) return true;
    return !(await this.answers(worker));
  }

  /** The first of `workers` that is gone (see workerGone). */
  private async firstGone(workers: readonly WorkerHandle[]): Promise<WorkerHandle | undefined> {
    for (const w of workers) if (await this.workerGone(w)) return w;
    return undefined;
  }

  /** Whether the worker is absent from the directory and does not answer Describe. */
  private async workerGone(worker: WorkerHandle): Promise<boolean> {
    if (await this.opts.workers.get(worker.id)) return false;
    return !(await this.answers(worker));
  }

  /** Whether the worker answers Describe within WORKER_PROBE_MS. */
  private async answers(worker: WorkerHandle): Promise<boolean> {
    try {
      await worker.client.describe({}, { signal: AbortSignal.timeout(WORKER_PROBE_MS) });
      return true;
    } catch {
      return false;
    }
  }

  /** Replays then follows a build's progress until it ends. */
  async *status(ref: string, signal: AbortSignal): AsyncIterable<control.StatusResponse> {
    for await (const ev of this.records.follow(ref, signal)) {
      const res = toStatusResponse(ev);
      if (res) yield res;
    }
  }

  listHistory(limit: number): control.ListHistoryResponse {
    return create(control.ListHistoryResponseSchema, { records: this.history.list(limit) });
  }

  inspectHistory(ref: string): control.InspectHistoryResponse {
    const record = this.history.get(ref);
    return create(control.InspectHistoryResponseSchema, { record, cacheMisses: this.steps.misses(record.ref) });
  }

  /** A build's kept progress: live builds are followed to their end, finished ones replayed from the history. */
  async *historyLogs(ref: string, signal: AbortSignal): AsyncIterable<control.HistoryLogsResponse> {
    const record = this.history.get(ref);
    const source = record.status === 'running' ? this.records.follow(record.ref, signal) : this.history.events(record.ref);
    for await (const ev of source) {
      const status = toStatusResponse(ev);
      if (status) yield create(control.HistoryLogsResponseSchema, { status });
    }
  }

  /**
   * Finished builds with their kept events and cache-miss explanations, one
   * at a time (`history export`): the given refs (resolved as inspect does,
   * a running one refused), every finished build with `all`, else the newest.
   */
  async *exportHistory(refs: readonly string[], all: boolean): AsyncIterable<control.ExportHistoryResponse> {
    const chosen = all ? this.history.finishedRefs() : refs.length > 0 ? refs : [''];
    if (all && chosen.length === 0) throw new NotFoundError('no finished builds in the history', { field: '--all' });
    for (const ref of chosen) {
      const { record, events } = this.history.exportEntry(ref);
      yield create(control.ExportHistoryResponseSchema, { entry: { record, events, cacheMisses: this.steps.misses(record.ref) } });
    }
  }

  /** Keeps one build another daemon exported, checked field by field first (`history import`). */
  importHistory(entry: control.HistoryBundleEntry | undefined): control.ImportHistoryResponse {
    if (!entry) throw new InvalidArgumentError('no build to import', 'entry');
    const record = checkImportedBuild(entry, { maxEventBytes: HISTORY_MAX_EVENT_BYTES });
    const { alreadyPresent } = this.history.importBuild(record, entry.events);
    if (!alreadyPresent) this.steps.saveImportedMisses(record.ref, entry.cacheMisses);
    this.opts.logger.info({ ref: record.ref, alreadyPresent }, 'imported a build record');
    return create(control.ImportHistoryResponseSchema, { ref: record.ref, alreadyPresent });
  }

  /** Where `--dashboard` serves (with its access token); set by the composition root once it listens. */
  setDashboardUrl(url: string | undefined): void {
    this.dashboardUrl = url;
  }

  /** The dashboard page of one build (`history open`). */
  openHistory(ref: string): control.OpenHistoryResponse {
    const record = this.history.get(ref);
    if (!this.dashboardUrl) {
      throw new KilnError('failed_precondition', 'this daemon serves no dashboard: start it with `kiln daemon --dashboard 127.0.0.1:PORT` (the solver tier with --tier solver) to open builds in a browser; `kiln history inspect` and `kiln history logs` show them here', { field: 'REF' });
    }
    const url = new URL(this.dashboardUrl);
    url.hash = `build=${record.ref}`;
    return create(control.OpenHistoryResponseSchema, { url: url.toString(), ref: record.ref });
  }

  deleteHistory(refs: readonly string[]): control.DeleteHistoryResponse {
    const deleted = this.history.delete(refs);
    this.steps.pruneOrphans();
    return create(control.DeleteHistoryResponseSchema, { deleted });
  }

  /** The workers matching every filter (the syntax of `--worker-filter`). */
  async listWorkers(filter: readonly string[] = []): Promise<control.ListWorkersResponse> {
    const filters = parseWorkerFilters(filter, '--filter');
    const workers = (await this.opts.workers.list()).filter((w) => matchesAll(filters, w));
    return create(control.ListWorkersResponseSchema, {
      record: workers.map((w) => ({ id: w.id, labels: { ...w.labels }, platforms: [...w.platforms], gcPolicy: gcPolicies(this.opts.gcPolicy), runningBuilds: this.load.get(w.id) ?? 0, ops: [...(w.ops ?? [])] })),
    });
  }

  /** Disk usage records: the solver cache's results (type "regular") and the content store's blobs (type "content"), filtered. */
  async diskUsage(filters: readonly string[], signal?: AbortSignal): Promise<control.DiskUsageResponse> {
    const filter = compileUsageFilter(filters, '--filter');
    const records: control.UsageRecord[] = [];
    if (filter.types.has('regular')) records.push(...(await this.cacheUsage.entries(signal)).map((e) => e.record));
    if (filter.types.has('content') && this.opts.content) records.push(...(await this.contentUsage().records(signal)));
    const now = Date.now();
    return create(control.DiskUsageResponseSchema, { record: records.filter((r) => filter.matches(r, now)) });
  }

  /**
   * Removes unused cache records (filters, keep-duration, keep-storage; in-use
   * ones never), releasing their refs on the workers, then runs the content
   * store's GC (never leased or referenced blobs). Streams each removed record.
   */
  async *prune(req: control.PruneRequest, signal?: AbortSignal): AsyncIterable<control.PruneResponse> {
    const filter = compileUsageFilter(req.filter, '--filter');
    const now = Date.now();
    const keepDurationMs = req.keepDurationSeconds > 0n ? Number(req.keepDurationSeconds) * 1000 : undefined;
    const entries = filter.types.has('regular') || req.maxUsedSpace > 0n || req.minFreeSpace > 0n ? await this.cacheUsage.entries(signal) : [];
    const keepBytes = pruneKeepBytes({
      reservedBytes: req.keepBytes,
      maxUsedBytes: req.maxUsedSpace,
      minFreeBytes: req.minFreeSpace,
      totalBytes: entries.reduce((n, e) => n + e.record.size, 0n),
      freeBytes: req.minFreeSpace > 0n ? freeDiskBytes(this.opts.root ?? process.cwd()) : 0n,
    });
    if (filter.types.has('regular')) {
      const doomed = planCachePrune(entries, { matches: (r) => filter.matches(r, now), nowMs: now, keepDurationMs, keepBytes });
      for (const e of doomed) {
        await this.cacheUsage.remove(e);
        yield create(control.PruneResponseSchema, { record: e.record });
      }
    }
    if (filter.types.has('content') && this.opts.content && !filter.selective) {
      const keepMs = Math.max(keepDurationMs ?? 0, filter.untilMs ?? 0);
      yield* this.contentUsage().prune(create(control.PruneRequestSchema, { keepBytes: keepBytes ?? 0n, keepDurationSeconds: BigInt(Math.ceil(keepMs / 1000)) }), signal);
    }
  }

  private contentUsage(): ContentUsage {
    if (!this.opts.content) throw new UnimplementedError('this solver has no content store configured');
    return new ContentUsage(this.opts.content);
  }

  info(): control.InfoResponse {
    return create(control.InfoResponseSchema, { version: this.opts.version ?? '0.1.0', tiers: this.opts.tiers ?? [] });
  }

  close(): void {
    this.relay.close();
    this.records.close();
    this.db.close();
  }

  /**
   * The frontend attrs plus `build-platform` (BUILDPLATFORM): the first
   * platform of the first worker matching the build's filters, unless the
   * client set it.
   */
  private async withBuildPlatform(attrs: Record<string, string>, filters: readonly WorkerFilter[]): Promise<Record<string, string>> {
    if (attrs['build-platform']) return attrs;
    const native = (await this.opts.workers.list()).find((w) => matchesAll(filters, w))?.platforms[0];
    return native ? { ...attrs, 'build-platform': formatPlatform(native) } : attrs;
  }

  /** The build's identity for cache-miss explanations: frontend, Dockerfile, target and the context directory's shared key. */
  private async buildIdentity(req: control.SolveRequest): Promise<string> {
    const context = await this.opts.sessions.sharedKey(req.sessionId, 'context').catch(() => '');
    return buildIdentity({ frontend: req.frontend, filename: req.frontendAttrs['filename'], target: req.frontendAttrs['target'], context });
  }

  private get registry(): RegistryClient {
    return (this.registryClient ??= this.opts.registry ?? createRegistryClient({}));
  }

  /** What a cache export needs; its registry client carries the build's session credentials. */
  private cacheDeps(log: Logger, sessionId: string, signal: AbortSignal): CacheExportDeps {
    const content = this.opts.content;
    if (!content) throw new UnimplementedError('cache export needs a content store, and this solver has none configured');
    return { workers: this.opts.workers, content, registry: buildRegistryClient(this.registry, this.opts.sessions, sessionId, signal), logger: log.child({ component: 'cache-export' }) };
  }

  /**
   * Runs one vertex through the cache: its key is computed from its inputs'
   * keys (a local source's from the content the worker received); a cached
   * result is published as `cached` and not run.
   */
  private async runVertex(b: BuildContext, worker: WorkerHandle, v: LlbVertex, inputs: OpResult[], signal: AbortSignal): Promise<OpResult> {
    const vertex: VertexInit = {
      digest: v.digest,
      inputs: v.inputs.map((i) => i.vertex.digest),
      name: v.name,
      progressGroup: v.op.metadata?.progressGroup ?? '',
    };
    const inputRefs = inputs.map((r, i) => r.refs[v.inputs[i]!.index] ?? '');
    const noCache = bypassesCache(v.op, b.noCache);
    const run = async (sig: AbortSignal) =>
      worker.client.run(
        { buildId: b.buildId, sessionId: b.sessionId, vertexDigest: v.digest, op: v.op.bytes, inputRefs: await this.localInputs(b, worker, v, inputs, inputRefs, sig), description: v.name, entitlements: [...b.entitlements], noCache },
        { signal: sig },
      );
    if (isLocalSource(v.op.op)) {
      return this.step(b.publish, vertex, async () => {
        const res = await run(signal);
        const content = res.contentDigests[0];
        // Without a content digest the result cannot be matched later: key it to this build alone.
        const cacheKey = content ? localSourceCacheKey(content) : sha256(`${v.digest}:${b.sessionId}:${b.buildId}`);
        b.explain?.explainer.record(vertexStep(v, b.explain.sites.get(v.digest), { key: '', inputKeys: [], workerId: worker.id, cached: false, noCache, files: res.contentFiles }));
        b.built.set(v.digest, { digest: v.digest, key: cacheKey, parents: [], inputs: [], description: v.name, workerId: worker.id, refs: res.outputRefs, exportable: false });
        return { workerId: worker.id, refs: res.outputRefs, cacheKey };
      });
    }
    const parentKeys = inputs.map((r, i) => outputKey(r.cacheKey, v.inputs[i]!.index));
    const inputKeys = await this.contentKeys(v, inputs, inputRefs, parentKeys, signal);
    const cacheKey = opCacheKey(v.op, inputKeys);
    const lookup = !noCache;
    const started = timestampNow();
    let publishedStart = false;
    let imported = false;
    try {
      // Only a step's result moves between workers: a source runs where it is needed (a pulled image keeps its base layers).
      const pull = v.op.op.op.case === 'source' ? undefined : { buildId: b.buildId, signal };
      // Another build running this key: the step shows as started here too while this build waits for it.
      const waiting = async () => {
        publishedStart = true;
        await b.publish({ case: 'vertex', value: { ...vertex, started } });
      };
      const res = await this.cache.resolve(cacheKey, worker, { lookup, description: v.name, holder: b.buildId, waiting, signal, ...(pull ? { pull } : {}) }, async () => {
        const fromImport = lookup && b.imports?.has(cacheKey) ? await b.imports.materialise(cacheKey, worker, b.buildId, signal) : undefined;
        if (fromImport) {
          imported = true;
          return fromImport;
        }
        publishedStart = true;
        await b.publish({ case: 'vertex', value: { ...vertex, started } });
        return (await run(signal)).outputRefs;
      });
      b.built.set(v.digest, {
        digest: v.digest,
        key: cacheKey,
        parents: parentKeys,
        inputs: v.inputs.map((i) => i.vertex.digest),
        description: v.name,
        workerId: res.workerId,
        refs: res.refs,
        exportable: true,
      });
      const cached = res.cached || imported;
      const step = vertexStep(v, b.explain?.sites.get(v.digest), { key: cacheKey, inputKeys, workerId: res.workerId, cached, noCache });
      const cacheMiss = b.explain?.explainer.record(step) ?? '';
      await b.publish({ case: 'vertex', value: { ...vertex, started, completed: timestampNow(), ...(cached ? { cached: true } : { cacheMiss }) } });
      return { workerId: res.workerId, refs: res.refs, cacheKey, holdOwner: res.holdOwner };
    } catch (err) {
      const e = asKilnError(err);
      if (!publishedStart) await b.publish({ case: 'vertex', value: { ...vertex, started } });
      await b.publish({ case: 'vertex', value: { ...vertex, started, completed: timestampNow(), error: e.message } });
      throw e;
    }
  }

  /**
   * The refs of a step's inputs on `worker`: an input made on another worker
   * (a branch placed there, see placeSteps) is moved here through the
   * content tier and held until the attempt ends.
   */
  private async localInputs(b: BuildContext, worker: WorkerHandle, v: LlbVertex, inputs: readonly OpResult[], refs: readonly string[], signal: AbortSignal): Promise<string[]> {
    return Promise.all(
      refs.map(async (ref, i) => {
        const input = inputs[i]!;
        if (!ref || input.workerId === worker.id) return ref;
        const hit = await this.cache.bring(input.cacheKey, worker, b.buildId, { buildId: b.buildId, signal });
        b.brought.push(hit);
        return hit.refs[v.inputs[i]!.index] ?? '';
      }),
    );
  }

  /**
   * The vertices of `def` an imported cache has by definition key (see
   * definitionKeys), found from the result down: each is taken from the
   * cache without resolving its inputs (BuildKit's min-mode import). The
   * local sources under the result run first (their content keys enter the
   * definition keys). A vertex with a step below it that bypasses the cache
   * (`--no-cache[-filter]`) is never a shortcut.
   */
  private async importShortcuts(
    b: BuildContext,
    worker: WorkerHandle,
    def: ParsedDefinition,
    graph: ReadonlyMap<string, { vertex: LlbVertex } & GraphNode<OpResult>>,
    session: SchedulerSession<OpResult>,
  ): Promise<Map<string, Shortcut>> {
    const shortcuts = new Map<string, Shortcut>();
    const imports = b.imports;
    if (!imports?.hasDefinitionKeys || !def.result) return shortcuts;
    const below = new Set<string>();
    const collect = [def.result.digest as string];
    while (collect.length > 0) {
      const d = collect.pop()!;
      if (below.has(d)) continue;
      below.add(d);
      for (const i of def.ops.get(d as never)?.op.inputs ?? []) collect.push(i.digest);
    }
    const locals = [...below].filter((d) => isLocalSource(def.ops.get(d as never)!.op));
    const localKeys = new Map(await Promise.all(locals.map(async (d) => [d, (await session.resolve(graph.get(d)!)).cacheKey] as const)));
    const dkeys = definitionKeys(def, (d) => localKeys.get(d));
    // Whether a vertex or any step below it bypasses the cache.
    const bypass = new Map<string, boolean>();
    walkPostOrder<string>(
      [...below],
      (d) => d,
      (d) => def.ops.get(d as never)!.op.inputs.map((i) => i.digest),
      (d) => {
        const op = def.ops.get(d as never)!;
        bypass.set(d, bypassesCache(op, b.noCache) || op.op.inputs.some((i) => bypass.get(i.digest)));
      },
    );
    const seen = new Set<string>();
    const visit = [def.result.digest as string];
    while (visit.length > 0) {
      const d = visit.pop()!;
      if (seen.has(d)) continue;
      seen.add(d);
      const op = def.ops.get(d as never)!;
      const dkey = dkeys.get(d as never);
      const hit = dkey && !bypass.get(d) && !isLocalSource(op.op) ? imports.byDefinitionKey(dkey) : undefined;
      if (hit) {
        const fallback = async (sig: AbortSignal) => {
          const full = graph.get(d)!;
          const inputs = await Promise.all(full.vertex.inputs.map((i) => session.resolve(graph.get(i.vertex.digest)!)));
          return this.runVertex(b, worker, full.vertex, inputs, sig);
        };
        shortcuts.set(d, { key: hit.key, run: (v, sig) => this.runImported(b, worker, v, hit, sig, fallback) });
        continue;
      }
      for (const i of op.op.inputs) visit.push(i.digest);
    }
    if (shortcuts.size > 0) this.opts.logger.info({ buildId: b.buildId, vertices: shortcuts.size }, 'cache import: steps taken by definition key, their inputs skipped');
    return shortcuts;
  }

  /** A vertex from an imported record without its inputs; when materialising fails, its inputs are resolved and it runs. */
  private async runImported(
    b: BuildContext,
    worker: WorkerHandle,
    v: LlbVertex,
    hit: { key: string; parents: string[] },
    signal: AbortSignal,
    fallback: (signal: AbortSignal) => Promise<OpResult>,
  ): Promise<OpResult> {
    const vertex: VertexInit = { digest: v.digest, inputs: [], name: v.name, progressGroup: v.op.metadata?.progressGroup ?? '' };
    const started = timestampNow();
    let res: Awaited<ReturnType<VertexCache['resolve']>>;
    try {
      res = await this.cache.resolve(hit.key, worker, { lookup: true, description: v.name, holder: b.buildId }, async () => {
        const made = await b.imports!.materialise(hit.key, worker, b.buildId, signal);
        if (!made) throw new KilnError('not_found', `imported cache record ${hit.key} could not be materialised`);
        return made;
      });
    } catch (err) {
      if (signal.aborted) throw err;
      return fallback(signal);
    }
    b.built.set(v.digest, { digest: v.digest, key: hit.key, parents: hit.parents, inputs: [], description: v.name, workerId: res.workerId, refs: res.refs, exportable: true });
    await b.publish({ case: 'vertex', value: { ...vertex, started, completed: timestampNow(), cached: true } });
    return { workerId: res.workerId, refs: res.refs, cacheKey: hit.key, holdOwner: res.holdOwner };
  }

  /**
   * The key each input contributes to an op's cache key: for an input the
   * op reads only some paths of (see inputSelectors), a checksum of those
   * paths in the input's ref (content, modes, owners, names; no mtimes), so
   * touching files or changing ones the op never reads keeps the key; else
   * the input's own key. A worker that cannot checksum (an older one)
   * leaves the input's key.
   */
  private async contentKeys(v: LlbVertex, inputs: OpResult[], refs: string[], parentKeys: string[], signal: AbortSignal): Promise<string[]> {
    const selectors = inputSelectors(v.op.op);
    return Promise.all(
      parentKeys.map(async (key, i) => {
        const selected = selectors[i];
        if (!selected || !refs[i]) return key;
        try {
          const w = await this.opts.workers.get(inputs[i]!.workerId);
          if (!w) return key;
          const res = await w.client.checksum({ ref: refs[i], selectors: selected }, { signal });
          return selectedContentKey(res.digest);
        } catch (err) {
          if (signal.aborted) throw err;
          this.opts.logger.warn({ err, vertex: v.digest, input: i }, 'no checksum of the paths an op reads: keyed by the whole input');
          return key;
        }
      }),
    );
  }

  /** Publishes a vertex as started, runs `fn`, and publishes it completed or failed. */
  private async step<T>(
    publish: (ev: MessageInitShape<typeof events.BuildEventSchema>['event']) => Promise<void>,
    vertex: VertexInit,
    fn: () => Promise<T>,
  ): Promise<T> {
    const started = timestampNow();
    await publish({ case: 'vertex', value: { ...vertex, started } });
    try {
      const result = await fn();
      await publish({ case: 'vertex', value: { ...vertex, started, completed: timestampNow() } });
      return result;
    } catch (err) {
      const e = asKilnError(err);
      await publish({ case: 'vertex', value: { ...vertex, started, completed: timestampNow(), error: e.message } });
      throw e;
    }
  }
}

/** Codes a lost worker shows up as (connection refused or reset, a stream cut mid-call). */
const TRANSIENT_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['unavailable', 'internal', 'deadline_exceeded']);
/** How long a worker gets to answer Describe before it counts as lost. */
const WORKER_PROBE_MS = 3000;
/** How often a build's worker is looked up in the directory while the build runs. */
const WORKER_WATCH_MS = 1000;

/** Why a worker counts as lost, without repeating its name (`worker "w1" connection lost: X` gives `connection lost: X`). */
function lostReason(workerId: string, err: unknown): string {
  const message = asKilnError(err).message;
  const prefix = `worker "${workerId}" `;
  return message.startsWith(prefix) ? message.slice(prefix.length) : message;
}

/** The frontend response's metadata key for SOURCE_DATE_EPOCH (seconds). */
const SOURCE_DATE_EPOCH_METADATA = 'source-date-epoch';
/** Exporters that make images: they date the config and history (and clamp layer times) by the epoch. */
const IMAGE_EXPORTERS = new Set(['oci', 'docker', 'image']);

/**
 * An exporter's attrs with the build's SOURCE_DATE_EPOCH (the frontend's:
 * a build arg or the Dockerfile's `ARG SOURCE_DATE_EPOCH=` default) where
 * an image exporter has none of its own.
 */
export function exporterAttrs(exp: { type: string; attrs: Record<string, string> }, sourceDateEpoch: string | undefined): Record<string, string> {
  if (sourceDateEpoch === undefined || !IMAGE_EXPORTERS.has(exp.type) || exp.attrs['source-date-epoch']) return exp.attrs;
  return { ...exp.attrs, 'source-date-epoch': sourceDateEpoch };
}

/** What a build brings to the worker that runs it (see Solver.buildOn). */
interface BuildPlan {
  req: control.SolveRequest;
  /** The entitlements the build was granted (its `--allow`, each permitted by the daemon). */
  granted: readonly string[];
  defs: readonly ParsedDefinition[];
  targets: BuildTarget[];
  cacheExports: ReturnType<typeof compileCacheExports>;
  /** The frontend's SOURCE_DATE_EPOCH (its response metadata), for image exporters without their own. */
  sourceDateEpoch: string | undefined;
  /** When Solve started (provenance's buildStartedOn). */
  startedMs: number;
  imports: CacheImports | undefined;
  publish: BuildContext['publish'];
  log: Logger;
  session: SchedulerSession<OpResult>;
  signal: AbortSignal;
  explainer: BuildExplainer;
  /** The worker filters the build's steps must match (the request's and the ops' constraints). */
  filters: readonly WorkerFilter[];
  /** Workers not to place steps on (one the build lost). */
  exclude: ReadonlySet<string>;
  /** Workers the build is counted on (see Solver.claim); a branch worker leaves it when the last of its steps ends. */
  claimed: Set<string>;
  /** Counts the build on another worker its steps run on (load, history, progress relay). */
  useWorker: (w: WorkerHandle) => void;
  /** The workers useWorker was called with. */
  placedOn: ReadonlyMap<string, WorkerHandle>;
}

/** What one target platform builds (platform empty: a single-platform build that named none). */
interface BuildTarget {
  platform: string;
  definition?: llb.Definition;
  imageConfig: Uint8Array;
}

/** What a gateway solve of build `buildId` shares with it. */
interface GatewaySolveContext {
  buildId: string;
  sessionId: string;
  publish: BuildContext['publish'];
  granted: ReadonlySet<string>;
  requested: readonly WorkerFilter[];
  noCache: string | undefined;
  session: SchedulerSession<OpResult>;
  claimed: Set<string>;
}

interface BuildContext {
  publish: (ev: MessageInitShape<typeof events.BuildEventSchema>['event']) => Promise<void>;
  buildId: string;
  sessionId: string;
  /** The frontend attr `no-cache` (see bypassesCache). */
  noCache: string | undefined;
  entitlements: readonly string[];
  /** The caches `--cache-from` named (absent: none). */
  imports: CacheImports | undefined;
  /** Every vertex result of the build so far, by vertex digest (for `--cache-to`). */
  built: Map<string, BuiltVertex>;
  /** Records steps and explains misses (absent for gateway solves). */
  explain?: { explainer: BuildExplainer; sites: ReadonlyMap<string, StepSite> };
  /** Inputs moved to the worker of the step reading them (see VertexCache.bring), held until the attempt ends. */
  brought: CacheHit[];
}

/** The platform whose image an inline cache import picks from an index: the definition's, else the worker's. */
function importPlatform(def: ParsedDefinition, worker: WorkerHandle): { os: string; architecture: string; variant?: string } {
  const p = [...def.ops.values()].map((o) => o.op.platform).find((x): x is llb.Platform => !!x?.os) ?? worker.platforms[0];
  return p ? { os: p.os, architecture: p.architecture, ...(p.variant ? { variant: p.variant } : {}) } : { os: 'linux', architecture: 'amd64' };
}

/** The key of output `index` of a vertex keyed `key`. */

function internalVertex(buildId: string, name: string, n = 0): VertexInit {
  return { digest: sha256(`${buildId}:${name}:${n}`), name };
}

/** Adds the source file and line of the failed op (from the metadata of the definition that has it). */
function locate(err: KilnError, defs: readonly ParsedDefinition[]): KilnError {
  const digest = err.details.digest;
  const def = defs.find((d) => d.ops.has(digest as never));
  if (!def || !digest || err.details.file) return err;
  const meta = def.ops.get(digest as never)?.metadata;
  const src = meta && meta.sourceIndex >= 0 ? def.definition.sources[meta.sourceIndex] : undefined;
  const range = meta?.ranges[0];
  if (!src || !range) return err;
  return new KilnError(err.code, err.message, { ...err.details, file: src.filename, line: range.startLine }, { cause: err });
}

/** The configured GC policy as ListWorkers reports it (none when GC is off). */
function gcPolicies(p: SolverOptions['gcPolicy']): MessageInitShape<typeof control.GCPolicySchema>[] {
  if (!p) return [];
  return [{ all: false, keepBytes: BigInt(p.keepBytes ?? 0), keepDurationSeconds: BigInt(Math.round((p.keepDurationMs ?? 0) / 1000)) }];
}

/** Bytes free for unprivileged use on the filesystem holding `dir` (0 when it cannot be read). */
function freeDiskBytes(dir: string): bigint {
  try {
    const st = statfsSync(dir, { bigint: true });
    return st.bavail * st.bsize;
  } catch {
    return 0n;
  }
}
