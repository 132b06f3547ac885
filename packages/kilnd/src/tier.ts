import { content, control, exporter, frontend, gateway, session, worker as workerApi } from '@kiln/api';
import { BUILD_EVENT_STREAM, connectNatsBus, createServiceDirectory, directoryClient, directoryClientById, directoryFrontends, lazyClient, redactUrl, type EventBus } from '@kiln/bus';
import { createDirectTransport, createKilnClient, DOCKERFILE_FRONTEND, formatAddress, FRONTEND_NAMES_LABEL, parseAddress, proveEndpointRole, serveRoutes, type Address, type Logger, type Routes } from '@kiln/common';
import { createContentServiceImpl } from '@kiln/content-store';
import { builtinExporters, createExporterServiceImpl } from '@kiln/exporters';
import { createFrontendServiceImpl } from '@kiln/frontend-gateway';
import { dockerfileFrontendFor } from './frontends.js';
import { createControlServiceImpl, createGatewayServiceImpl, createSessionServiceImpl, SessionHost, Solver, type WorkerPool } from '@kiln/solver';
import { createWorkerServiceImpl } from '@kiln/worker';
import { createContainerdWorker } from '@kiln/worker-containerd';
import { createOciWorker } from '@kiln/worker-oci';
import { join } from 'node:path';
import type { RunningDaemon } from './all-in-one.js';
import { CLUSTER_ACCESS, roleOfTier } from './access.js';
import { loadDaemonTls, warnInsecureTcp } from './daemon-tls.js';
import { openContentTier } from './content-tier.js';
import type { DaemonOptions } from './options.js';
import { daemonRegistryClient } from './registry-client.js';
import { startDaemonDashboard } from './dashboard/start-daemon-dashboard.js';

/** Directory tier names: both worker backends announce as "worker". */
const ANNOUNCE_AS: Record<string, string> = { 'worker-oci': 'worker', 'worker-containerd': 'worker' };

/**
 * One tier alone in this process: it serves its Connect service over HTTP/2
 * on `--listen`, announces itself on the bus (NATS), and reaches the other
 * tiers through clients found in the directory.
 */
export async function startTier(opts: DaemonOptions, logger: Logger): Promise<RunningDaemon> {
  const log = logger.child({ tier: opts.tier });
  const tls = loadDaemonTls(opts, roleOfTier(opts.tier));
  warnInsecureTcp(opts, opts.listen!, log);
  const bus: EventBus = await connectNatsBus({
    servers: opts.nats!.split(',').map((u) => u.trim()),
    name: `kiln-${opts.tier}-${opts.id}`,
    logger: log,
    auth: opts.natsAuth,
    tls: opts.natsTls,
    // Replies (JetStream acknowledgements) on inboxes of this tier's role: deploy/nats grants each role only its own.
    inboxPrefix: `_INBOX.${ANNOUNCE_AS[opts.tier] ?? opts.tier}`,
  });
  if (!opts.natsAuth) {
    log.warn('NATS without credentials: any client of that server can announce itself as a tier; run it as deploy/nats/nats-server.conf does and give --nats-user (README, "NATS")');
  }
  // With mTLS, an announcement counts only once its endpoint has proved the announced tier's role.
  const verify = tls
    ? async (a: { tier: string; url: string }) => {
        try {
          return await proveEndpointRole(parseAddress(a.url, 'announcement url'), tls, [roleOfTier(a.tier)]);
        } catch (err) {
          return { ok: false as const, reason: (err as Error).message };
        }
      }
    : undefined;
  const directory = createServiceDirectory(bus, { logger: log, verify });
  const buildEvents = bus.eventStream(BUILD_EVENT_STREAM.name, BUILD_EVENT_STREAM.subjects);
  const solverSessions = () => lazyClient(session.SessionService, directoryClient(directory, 'solver', session.SessionService, { tls }));
  const closers: (() => Promise<void> | void)[] = [];
  /** Run first on a stop, not awaited (see Worker.releaseIdle). */
  const onStop: (() => void)[] = [];
  let routes: Routes;
  let platforms: { os: string; architecture: string; variant?: string }[] = [];
  let labels: Record<string, string> = {};
  let ops: string[] = [];

  switch (opts.tier) {
    case 'solver': {
      const sessions = new SessionHost(log.child({ component: 'session' }));
      const workerClient = directoryClientById(directory, 'worker', workerApi.WorkerService, { tls });
      const workers: WorkerPool = {
        list: async () => {
          const found = [];
          for (const a of directory.list('worker')) {
            const client = await workerClient(a.id);
            if (client) found.push({ id: a.id, platforms: a.platforms, labels: a.labels, ops: a.ops, client });
          }
          return found;
        },
        get: async (id) => (await workers.list()).find((w) => w.id === id),
      };
      const solver = new Solver({
        bus,
        logger: log,
        sessions,
        frontend: directoryFrontends(directory, frontend.FrontendService, { tls }),
        exporters: directoryClient(directory, 'exporters', exporter.ExporterService, { tls }),
        workers,
        content: directoryClient(directory, 'content', content.ContentService, { timeoutMs: 5_000, tls }),
        // Registry caches and the gateway's image lookups: insecure hosts, mirrors and credentials as the other tiers.
        registry: daemonRegistryClient(opts.registry),
        maxParallelism: opts.maxParallelism,
        root: join(opts.root, 'solver'),
        gcPolicy: opts.gc,
        allowedEntitlements: opts.entitlements,
        placement: opts.placement,
        tiers: ['solver'],
        eventStream: opts.events,
        instanceId: opts.id,
      });
      closers.push(() => solver.close());
      // Build events go through JetStream: without the stream, progress could not outlive a NATS outage.
      await solver.ready().catch(async (err: unknown) => {
        solver.close();
        await bus.close();
        throw err;
      });
      routes = (r) => {
        r.service(control.ControlService, createControlServiceImpl(solver));
        r.service(session.SessionService, createSessionServiceImpl(sessions));
        r.service(gateway.GatewayService, createGatewayServiceImpl(solver));
      };
      if (opts.dashboard) {
        // The dashboard reads this solver's Control service in-process.
        const controlService = (r: Parameters<Routes>[0]) => r.service(control.ControlService, createControlServiceImpl(solver));
        const dashboard = await startDaemonDashboard(opts.dashboard, createKilnClient(control.ControlService, createDirectTransport(controlService)), opts.root, log);
        solver.setDashboardUrl(dashboard.url); // `kiln history open`
        closers.push(() => dashboard.close());
      }
      break;
    }
    case 'frontend':
      labels = { [FRONTEND_NAMES_LABEL]: DOCKERFILE_FRONTEND };
      routes = (r) =>
        r.service(
          frontend.FrontendService,
          createFrontendServiceImpl({
            frontends: [dockerfileFrontendFor(opts.registry)],
            sessions: solverSessions(),
            gateway: lazyClient(gateway.GatewayService, directoryClient(directory, 'solver', gateway.GatewayService, { tls })),
            logger: log,
          }),
        );
      break;
    case 'content': {
      const store = await openContentTier(opts, log, (subject, data) => bus.publish(subject, data));
      closers.push(() => store.close());
      routes = (r) => r.service(content.ContentService, createContentServiceImpl(store));
      break;
    }
    case 'worker-oci':
    case 'worker-containerd': {
      const create = opts.tier === 'worker-oci' ? createOciWorker : createContainerdWorker;
      const w = await create({
        id: opts.id,
        root: join(opts.root, opts.tier),
        registry: daemonRegistryClient(opts.registry),
        sessions: solverSessions(),
        allowedEntitlements: opts.entitlements,
        maxParallelExecs: opts.maxParallelExecs,
        network: opts.network,
        labels: opts.workerLabels,
        disabledOps: opts.workerDisabledOps,
        containerdAddress: opts.containerdAddress,
        content: lazyClient(content.ContentService, directoryClient(directory, 'content', content.ContentService, { tls })),
        // Progress goes to the build event stream: kept while NATS is down, stored once it is back.
        publish: (subject: string, data: Uint8Array) => buildEvents.publish(subject, data),
        logger: log,
      });
      closers.push(() => w.close());
      onStop.push(() => void w.releaseIdle?.());
      const d = await w.describe();
      platforms = d.platforms;
      labels = d.labels;
      ops = d.ops;
      routes = (r) => r.service(workerApi.WorkerService, createWorkerServiceImpl(w));
      break;
    }
    case 'exporters':
      routes = (r) =>
        r.service(
          exporter.ExporterService,
          createExporterServiceImpl({
            exporters: builtinExporters,
            worker: directoryClientById(directory, 'worker', workerApi.WorkerService, { tls }),
            sessions: solverSessions(),
            content: lazyClient(content.ContentService, directoryClient(directory, 'content', content.ContentService, { tls })),
            registry: daemonRegistryClient(opts.registry),
            logger: log,
          }),
        );
      break;
    default:
      throw new Error(`startTier called for ${opts.tier}`);
  }

  const server = await serveRoutes(opts.listen!, routes, { tls, access: CLUSTER_ACCESS, insecureTcp: opts.insecureTcp });
  const url = opts.advertise ?? formatAddress(server.address as Address);
  const announcement = await directory.announce({ tier: ANNOUNCE_AS[opts.tier] ?? opts.tier, id: opts.id, url, platforms, labels: { ...labels, 'kiln.tier': opts.tier }, ops });
  log.info({ url, nats: redactUrl(opts.nats!), natsAuth: natsAuthKind(opts), natsTls: Boolean(opts.natsTls), mtls: tls !== undefined }, `kilnd tier ${opts.tier} ready`);
  return {
    async close() {
      for (const f of onStop) f();
      await announcement.stop();
      await server.close();
      for (const c of closers.reverse()) await c();
      await directory.close();
      await bus.close();
    },
  };
}

/** What kind of NATS credentials a tier uses, for its ready line (never the secret). */
function natsAuthKind(opts: DaemonOptions): string {
  const a = opts.natsAuth;
  if (!a) return 'none';
  return 'user' in a ? `user ${a.user}` : 'token' in a ? 'token' : 'nkeySeed' in a ? 'nkey' : 'creds';
}
