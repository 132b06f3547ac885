import { frontend, gateway, session } from '@kiln/api';
import { connectNatsBus, createServiceDirectory, directoryClient, lazyClient, type NatsConnectOptions } from '@kiln/bus';
import { formatAddress, FRONTEND_NAMES_LABEL, InvalidArgumentError, parseAddress, proveEndpointRole, serveRoutes, silentLogger, type Address, type Logger, type TierRole, type TlsCredentials } from '@kiln/common';
import type { KilnFrontend } from './contract.js';
import { answerSolve } from './respond.js';

export interface ServeFrontendOptions {
  /** Where to listen: `tcp://HOST:PORT` (port 0: any free one). */
  listen: string;
  /** The URL other tiers reach this one at (default the bound address). */
  advertise?: string;
  /** Unique among frontend instances (e.g. host name + pid). */
  id: string;
  /** The cluster's NATS (URL, credentials, TLS) — as `kiln daemon --nats ...` takes it. */
  nats: NatsConnectOptions;
  /** Mutual TLS with a certificate naming the `frontend` role (tools/make-certs.sh). */
  tls?: TlsCredentials;
  /** Plain TCP on a non-loopback address (no authentication; see SECURITY.md). */
  insecureTcp?: boolean;
  logger?: Logger;
}

export interface RunningFrontend {
  /** The announced URL. */
  readonly url: string;
  close(): Promise<void>;
}

/**
 * Runs `fe` as a frontend tier: serves FrontendService (only the solver may
 * call it over mTLS), announces the names it serves in the cluster's
 * directory, and reaches the solver's session relay and gateway through
 * the directory, checking each endpoint proves the solver role.
 */
export async function serveFrontend(fe: KilnFrontend, opts: ServeFrontendOptions): Promise<RunningFrontend> {
  for (const n of fe.names) if (!/^[A-Za-z0-9._/:@-]+$/.test(n)) throw new InvalidArgumentError(`frontend name "${n}" has characters outside [A-Za-z0-9._/:@-]`, 'names');
  if (fe.names.length === 0) throw new InvalidArgumentError('a frontend serves at least one name', 'names');
  const log = (opts.logger ?? silentLogger()).child({ tier: 'frontend', frontend: fe.names.join(',') });
  const bus = await connectNatsBus({ servers: opts.nats.url.split(',').map((u) => u.trim()), name: `kiln-frontend-${opts.id}`, logger: log, auth: opts.nats.auth, tls: opts.nats.tls });
  const tls = opts.tls;
  const verify = tls
    ? async (a: { tier: string; url: string }) => {
        try {
          return await proveEndpointRole(parseAddress(a.url, 'announcement url'), tls, [a.tier as TierRole]);
        } catch (err) {
          return { ok: false as const, reason: (err as Error).message };
        }
      }
    : undefined;
  const directory = createServiceDirectory(bus, { logger: log, verify });
  const clients = {
    sessions: lazyClient(session.SessionService, directoryClient(directory, 'solver', session.SessionService, { tls })),
    gateway: lazyClient(gateway.GatewayService, directoryClient(directory, 'solver', gateway.GatewayService, { tls })),
  };
  try {
    const server = await serveRoutes(
      opts.listen,
      (r) =>
        r.service(frontend.FrontendService, {
          async solve(req, ctx) {
            log.debug({ buildId: req.buildId }, 'frontend solve');
            return answerSolve(fe, req, clients, ctx.signal);
          },
        }),
      { tls, access: { [frontend.FrontendService.typeName]: { '*': ['solver'] } }, insecureTcp: opts.insecureTcp },
    );
    const url = opts.advertise ?? formatAddress(server.address as Address);
    const announcement = await directory.announce({ tier: 'frontend', id: opts.id, url, labels: { [FRONTEND_NAMES_LABEL]: fe.names.join(','), 'kiln.tier': 'frontend' } });
    log.info({ url, names: fe.names }, 'frontend ready');
    return {
      url,
      async close() {
        await announcement.stop();
        await server.close();
        await directory.close();
        await bus.close();
      },
    };
  } catch (err) {
    await directory.close();
    await bus.close();
    throw err;
  }
}
