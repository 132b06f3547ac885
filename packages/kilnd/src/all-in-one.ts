import { create } from '@bufbuild/protobuf';
import type { Client } from '@connectrpc/connect';
import { content, control, exporter, frontend, gateway, llb, session, worker as workerApi } from '@kiln/api';
import { createMemoryBus } from '@kiln/bus';
import { createDirectTransport, createKilnClient, DOCKERFILE_FRONTEND, NotFoundError, serveRoutes, type Logger, type Routes, type RpcServer } from '@kiln/common';
import { createContentServiceImpl } from '@kiln/content-store';
import { builtinExporters, createExporterServiceImpl } from '@kiln/exporters';
import { createFrontendServiceImpl } from '@kiln/frontend-gateway';
import { dockerfileFrontendFor } from './frontends.js';
import { createControlServiceImpl, createGatewayServiceImpl, createSessionServiceImpl, SessionHost, Solver, type WorkerPool } from '@kiln/solver';
import { createWorkerServiceImpl } from '@kiln/worker';
import { createContainerdWorker } from '@kiln/worker-containerd';
import { createOciWorker } from '@kiln/worker-oci';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLUSTER_ACCESS } from './access.js';
import { openContentTier } from './content-tier.js';
import { loadDaemonTls, warnInsecureTcp } from './daemon-tls.js';
import { createDeferredTransport } from './deferred-transport.js';
import type { DaemonOptions } from './options.js';
import { daemonRegistryClient } from './registry-client.js';
import { startDaemonDashboard } from './dashboard/start-daemon-dashboard.js';

export interface RunningDaemon {
  close(): Promise<void>;
}

/**
 * Every tier in one process: tiers still talk through their Connect clients,
 * over Connect's in-memory router transport, and events go over the
 * in-process bus. The CLI reaches Control and Session on `opts.addr`.
 */
export async function startAllInOne(opts: DaemonOptions, logger: Logger): Promise<RunningDaemon> {
  // Over TCP with mTLS the daemon shows the solver's face: clients reach Control and Session only.
  const tls = loadDaemonTls(opts, 'solver');
  const bus = createMemoryBus();
  const transport = createDeferredTransport();
  const sessionClient = createKilnClient(session.SessionService, transport);
  const workerClient = createKilnClient(workerApi.WorkerService, transport);

  const store = await openContentTier(opts, logger.child({ tier: 'content' }), (subject, data) => bus.publish(subject, data));
  const sessions = new SessionHost(logger.child({ tier: 'solver', component: 'session' }));
  const createWorker = opts.worker === 'containerd' ? createContainerdWorker : createOciWorker;
  const localWorker = createWorker({
    id: opts.id,
    root: join(opts.root, `worker-${opts.worker}`),
    registry: daemonRegistryClient(opts.registry),
    sessions: sessionClient,
    allowedEntitlements: opts.entitlements,
    maxParallelExecs: opts.maxParallelExecs,
    network: opts.network,
    labels: opts.workerLabels,
    disabledOps: opts.workerDisabledOps,
    containerdAddress: opts.containerdAddress,
    content: createKilnClient(content.ContentService, transport),
    publish: (subject, data) => bus.publish(subject, data),
    logger: logger.child({ tier: 'worker-oci' }),
  });
  const description = await localWorker.describe();
  const handle = {
    id: description.id,
    platforms: description.platforms.map((p) => create(llb.PlatformSchema, p)),
    labels: description.labels,
    ops: description.ops,
    client: workerClient,
  };
  const workers: WorkerPool = {
    list: async () => [handle],
    get: async (id) => (id === handle.id ? handle : undefined),
  };
  const solver = new Solver({
    bus,
    logger: logger.child({ tier: 'solver' }),
    sessions,
    // One process serves only the built-in Dockerfile frontend; pluggable frontends join a cluster (docs/FRONTENDS.md).
    frontend: async (name) => {
      if (name !== DOCKERFILE_FRONTEND) throw new NotFoundError(`no frontend serves "${name}" (this daemon offers: ${DOCKERFILE_FRONTEND}; pluggable frontends run as tiers of a cluster)`, { frontend: name });
      return createKilnClient(frontend.FrontendService, transport);
    },
    exporters: async () => createKilnClient(exporter.ExporterService, transport),
    workers,
    content: async () => createKilnClient(content.ContentService, transport),
    // Registry caches and the gateway's image lookups: insecure hosts, mirrors and credentials as the other tiers.
    registry: daemonRegistryClient(opts.registry),
    maxParallelism: opts.maxParallelism,
    root: join(opts.root, 'solver'),
    gcPolicy: opts.gc,
    allowedEntitlements: opts.entitlements,
    placement: opts.placement,
    tiers: ['solver', 'frontend', 'content', `worker-${opts.worker}`, 'exporters'],
  });

  const routes: Routes = (r) => {
    r.service(control.ControlService, createControlServiceImpl(solver));
    r.service(session.SessionService, createSessionServiceImpl(sessions));
    r.service(gateway.GatewayService, createGatewayServiceImpl(solver));
    r.service(frontend.FrontendService, createFrontendServiceImpl({ frontends: [dockerfileFrontendFor(opts.registry)], sessions: sessionClient, gateway: createKilnClient(gateway.GatewayService, transport), logger: logger.child({ tier: 'frontend' }) }));
    r.service(workerApi.WorkerService, createWorkerServiceImpl(localWorker));
    r.service(content.ContentService, createContentServiceImpl(store));
    r.service(
      exporter.ExporterService,
      createExporterServiceImpl({
        exporters: builtinExporters,
        worker: async (id) => (id === description.id ? (workerClient as Client<typeof workerApi.WorkerService>) : undefined),
        sessions: sessionClient,
        content: createKilnClient(content.ContentService, transport),
        // Same process: layer blobs go from the store's files into a local write in the kernel.
        localBlobFiles: (digest) => store.openBlob(digest),
        registry: daemonRegistryClient(opts.registry),
        logger: logger.child({ tier: 'exporters' }),
      }),
    );
  };
  // Tiers call each other in-process without encoding (export streams pass their buffers through).
  transport.bind(createDirectTransport(routes));
  warnInsecureTcp(opts, opts.addr, logger);
  const server: RpcServer = await serveRoutes(opts.addr, routes, { tls, access: CLUSTER_ACCESS, insecureTcp: opts.insecureTcp, socketGid: opts.socketGid });
  // Lets scripts (and `kill $(cat ROOT/kilnd.pid)`) find the daemon.
  const pidFile = join(opts.root, 'kilnd.pid');
  mkdirSync(opts.root, { recursive: true });
  writeFileSync(pidFile, `${process.pid}\n`);
  const dashboard = opts.dashboard ? await startDaemonDashboard(opts.dashboard, createKilnClient(control.ControlService, transport), opts.root, logger) : undefined;
  if (dashboard) solver.setDashboardUrl(dashboard.url); // `kiln history open`
  logger.info({ addr: opts.addr, root: opts.root }, 'kilnd ready (all tiers in one process)');
  return {
    async close() {
      // Before anything slow: a stop is often followed by SIGKILL (a harness's grace is 300 ms), and a leaked namespace outlives the process.
      void localWorker.releaseIdle?.();
      await dashboard?.close();
      await server.close();
      rmSync(pidFile, { force: true });
      solver.close();
      await localWorker.close();
      await store.close();
      await bus.close();
    },
  };
}
