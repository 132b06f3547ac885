import type { Client } from '@connectrpc/connect';
import { connectNodeAdapter } from '@connectrpc/connect-node';
import { control } from '@kiln/api';
import { formatAddress, isLocalAddress, KilnError, serverErrorInterceptor, type Address, type Logger } from '@kiln/common';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import http from 'node:http';
import { extname, join } from 'node:path';
import { createReadOnlyControl } from './read-only-control.js';
import { DASHBOARD_COOKIE, hostAllowed, newDashboardToken, requestToken, tokenMatches } from './dashboard-token.js';

export interface DashboardOptions {
  /** A loopback TCP address (`127.0.0.1:PORT`; port 0 picks one). */
  address: Address;
  /** The daemon's own Control service (the solver's), called for every read. */
  control: Client<typeof control.ControlService>;
  /** The built front end (packages/dashboard-ui/dist): index.html, app.js, app.css. */
  assetsDir: string;
  logger: Logger;
  /** Fixed token (tests); default a fresh random one per start. */
  token?: string;
}

export interface RunningDashboard {
  /** `http://127.0.0.1:PORT/?token=...`: opening it sets the cookie and lands on the dashboard. */
  readonly url: string;
  readonly port: number;
  readonly token: string;
  close(): Promise<void>;
}

const CONTENT_TYPES: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.svg': 'image/svg+xml' };
/** Everything the dashboard serves may come only from itself; it is never framed. */
const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
};

/**
 * `kiln daemon --dashboard 127.0.0.1:PORT`: a read-only web UI of the
 * cluster. HTTP/1.1 on loopback only; every request needs the per-start
 * token (docs/ARCHITECTURE.md, "Dashboard"). The browser speaks Connect
 * (JSON) to the read methods of ControlService on this listener, which
 * pass them to the solver's Control service; static files are the built
 * front end, held in memory.
 */
export async function startDashboard(opts: DashboardOptions): Promise<RunningDashboard> {
  const a = opts.address;
  if (a.kind !== 'tcp' || !isLocalAddress(a) || a.host === 'localhost') {
    throw new KilnError('invalid_argument', `--dashboard must be a loopback address like 127.0.0.1:PORT, got "${formatAddress(a)}": the dashboard is reached through the token, never from another host`, { field: '--dashboard' });
  }
  const assets = loadAssets(opts.assetsDir);
  const token = opts.token ?? newDashboardToken();
  const rpc = connectNodeAdapter({
    routes: (r) => r.service(control.ControlService, createReadOnlyControl(opts.control)),
    interceptors: [serverErrorInterceptor],
    acceptCompression: [],
  });
  let port = a.port;
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://dashboard');
    if (!hostAllowed(req.headers.host, port)) return refuse(res, 421, 'dashboard: wrong Host header (only 127.0.0.1, localhost or [::1] with this port)');
    // First visit: the token in the URL becomes an HttpOnly cookie, and the URL loses it.
    const fromQuery = url.searchParams.get('token') ?? undefined;
    if (req.method === 'GET' && url.pathname === '/' && fromQuery !== undefined) {
      if (!tokenMatches(fromQuery, token)) return refuse(res, 401, 'dashboard: wrong token');
      res.writeHead(303, { ...SECURITY_HEADERS, location: '/', 'set-cookie': `${DASHBOARD_COOKIE}=${token}; Path=/; HttpOnly; SameSite=Strict` });
      return res.end();
    }
    if (!tokenMatches(requestToken(req), token)) return refuse(res, 401, 'dashboard: open the URL with ?token= that kilnd logged ("dashboard ready") or wrote to ROOT/dashboard.url');
    if (url.pathname.startsWith('/kiln.')) return void rpc(req, res);
    const asset = assets.get(url.pathname === '/' ? '/index.html' : url.pathname);
    if (!asset || (req.method !== 'GET' && req.method !== 'HEAD')) return refuse(res, 404, 'not found');
    res.writeHead(200, { ...SECURITY_HEADERS, 'content-type': asset.type, 'content-length': asset.body.length });
    res.end(req.method === 'HEAD' ? undefined : asset.body);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(a.port, a.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = server.address();
  port = typeof bound === 'object' && bound ? bound.port : a.port;
  const host = a.host.includes(':') ? `[${a.host}]` : a.host;
  opts.logger.debug({ assets: opts.assetsDir, files: assets.size }, 'dashboard assets loaded');
  return {
    url: `http://${host}:${port}/?token=${token}`,
    port,
    token,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function refuse(res: http.ServerResponse, status: number, message: string): void {
  res.writeHead(status, { ...SECURITY_HEADERS, 'content-type': 'text/plain; charset=utf-8' });
  res.end(`${message}\n`);
}

/** The front end's files by URL path; a missing build is an error at start, not a blank page. */
function loadAssets(dir: string): Map<string, { type: string; body: Buffer }> {
  if (!existsSync(join(dir, 'index.html'))) {
    throw new KilnError('failed_precondition', `dashboard front end is not built: ${join(dir, 'index.html')} is missing (npm run build builds packages/dashboard-ui)`, { field: '--dashboard' });
  }
  const out = new Map<string, { type: string; body: Buffer }>();
  for (const name of readdirSync(dir)) {
    const type = CONTENT_TYPES[extname(name)];
    const path = join(dir, name);
    if (type && statSync(path).isFile()) out.set(`/${name}`, { type, body: readFileSync(path) });
  }
  return out;
}
