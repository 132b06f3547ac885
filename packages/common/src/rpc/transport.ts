import { createContextValues, createRouterTransport, type ConnectRouter, type Transport } from '@connectrpc/connect';
import { connectNodeAdapter, createConnectTransport, Http2SessionManager } from '@connectrpc/connect-node';
import { chmodSync, chownSync, mkdirSync, rmSync } from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import { dirname } from 'node:path';
import { serverErrorInterceptor } from '../errors/connect.js';
import { KilnError } from '../errors/errors.js';
import { formatAddress, parseAddress, type Address } from './address.js';
import { authorizationInterceptor, peerKey, peerOfRequest, type AccessTable } from './peer.js';
import { expectServerRole, isLocalAddress, type TierRole, type TlsCredentials } from './tls.js';

export type Routes = (router: ConnectRouter) => void;

/**
 * HTTP/2 flow control sized for tars and blobs. With the defaults (64 KiB
 * windows, 16 KiB frames) a 100 MiB export waits for ~1600 WINDOW_UPDATE
 * round trips between the two processes; on a loaded machine each one
 * waits for the reader to be scheduled. Both peers advertise these; the
 * connection window is raised with WINDOW_UPDATE once the session is up.
 */
export const H2_STREAM_WINDOW = 8 * 2 ** 20;
export const H2_CONNECTION_WINDOW = 32 * 2 ** 20;
const H2_SETTINGS: http2.Settings = { initialWindowSize: H2_STREAM_WINDOW, maxFrameSize: 2 ** 20 };
/** nghttp2 counts unread DATA against this (MiB); it must hold a full connection window. */
const H2_MAX_SESSION_MEMORY_MIB = 128;

function widenConnectionWindow(session: http2.Http2Session): void {
  if (session.destroyed) return;
  const widen = () => {
    if (!session.destroyed) session.setLocalWindowSize(H2_CONNECTION_WINDOW);
  };
  // setLocalWindowSize needs the session's handle: on a client it exists once connected.
  if (session.connecting) session.once('connect', widen);
  else widen();
}

/** connect-node's session manager, widening each new session's connection window. */
class WideWindowSessionManager extends Http2SessionManager {
  readonly #widened = new WeakSet<http2.Http2Session>();

  override async request(...args: Parameters<Http2SessionManager['request']>): Promise<http2.ClientHttp2Stream> {
    const stream = await super.request(...args);
    const session = stream.session;
    if (session && !this.#widened.has(session)) {
      this.#widened.add(session);
      widenConnectionWindow(session);
    }
    return stream;
  }
}

export interface NodeTransportOptions {
  /**
   * Mutual TLS for a TCP address: the server must present a certificate
   * the CA signed naming one of `serverRoles` (any tier role when absent);
   * this process presents its own. Ignored for a unix socket.
   */
  tls?: TlsCredentials;
  serverRoles?: readonly TierRole[];
}

/**
 * A Connect client transport over HTTP/2 to `addr` (unix socket or TCP).
 * Use `createKilnClient` on it so calls throw KilnErrors.
 */
export function createNodeTransport(addr: string | Address, opts: NodeTransportOptions = {}): Transport {
  const a = typeof addr === 'string' ? parseAddress(addr) : addr;
  const secure = a.kind === 'tcp' && opts.tls !== undefined;
  const baseUrl = a.kind === 'unix' ? 'http://localhost' : `${secure ? 'https' : 'http'}://${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}`;
  const sessionOptions: http2.SecureClientSessionOptions = {
    settings: H2_SETTINGS,
    maxSessionMemory: H2_MAX_SESSION_MEMORY_MIB,
    ...(a.kind === 'unix' ? { createConnection: () => net.connect(a.path) } : {}),
    ...(secure ? { ca: opts.tls!.ca, cert: opts.tls!.cert, key: opts.tls!.key, checkServerIdentity: expectServerRole(opts.serverRoles) } : {}),
  };
  return createConnectTransport({
    httpVersion: '2',
    baseUrl,
    useBinaryFormat: true,
    // No gzip: the payloads are tars and blobs on fast links, where
    // compressing cost more than it saved (64 MiB export: 3.4 s -> see bench).
    acceptCompression: [],
    sessionManager: new WideWindowSessionManager(baseUrl, { pingIntervalMs: 15_000 }, sessionOptions),
  });
}

/** An in-process transport straight into `routes`, with the same error mapping. */
export function createInMemoryTransport(routes: Routes): Transport {
  return createRouterTransport(routes, {
    router: { interceptors: [serverErrorInterceptor], acceptCompression: [] },
    transport: { acceptCompression: [] },
  });
}

export interface RpcServer {
  /** The address actually bound (a TCP port 0 becomes the real port). */
  readonly address: Address;
  /** Stops accepting, ends open sessions after `graceMs`, removes a unix socket. */
  close(graceMs?: number): Promise<void>;
}

export interface ServeOptions {
  /**
   * Mutual TLS on a TCP address: only clients with a certificate `tls.ca`
   * signed get through the handshake; `access` then says which role may
   * call which method. Ignored for a unix socket.
   */
  tls?: TlsCredentials;
  access?: AccessTable;
  /**
   * Serve plain TCP on a non-loopback address (anyone who reaches the port
   * may call every method). Without it that is refused.
   */
  insecureTcp?: boolean;
  /**
   * A unix socket is made 0660 (owner and group only, as buildkitd's); with
   * `socketGid` its group is that gid (`kiln daemon --group`), so members of
   * that group may use the daemon without being root.
   */
  socketGid?: number;
}

/**
 * Serves `routes` over HTTP/2 on a unix socket (the peer is the local
 * user), over TLS on TCP when `opts.tls` is set, else h2c on TCP (loopback
 * only unless `opts.insecureTcp`). Handlers find the caller in
 * `ctx.values.get(peerKey)`.
 */
export async function serveRoutes(addr: string | Address, routes: Routes, opts: ServeOptions = {}): Promise<RpcServer> {
  const a = typeof addr === 'string' ? parseAddress(addr) : addr;
  const secure = a.kind === 'tcp' && opts.tls !== undefined;
  if (a.kind === 'tcp' && !secure && !opts.insecureTcp && !isLocalAddress(a)) {
    throw new KilnError('invalid_argument', `refusing plain TCP on ${formatAddress(a)}: anyone who reaches it could run builds and containers; give --tlscacert/--tlscert/--tlskey, or --insecure-tcp to accept the risk`, { field: '--insecure-tcp' });
  }
  const interceptors = [serverErrorInterceptor, ...(secure ? [authorizationInterceptor(opts.access ?? {}, { requireTls: true })] : [])];
  const handler = connectNodeAdapter({ routes, interceptors, acceptCompression: [], contextValues: (req) => createContextValues().set(peerKey, peerOfRequest(req as http2.Http2ServerRequest)) });
  const h2 = { settings: H2_SETTINGS, maxSessionMemory: H2_MAX_SESSION_MEMORY_MIB };
  const server: http2.Http2Server | http2.Http2SecureServer = secure
    ? http2.createSecureServer({ ...h2, ca: opts.tls!.ca, cert: opts.tls!.cert, key: opts.tls!.key, requestCert: true, rejectUnauthorized: true }, handler)
    : http2.createServer(h2, handler);
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on('session', (s) => {
    widenConnectionWindow(s);
    sessions.add(s);
    s.on('close', () => sessions.delete(s));
  });
  if (a.kind === 'unix') {
    mkdirSync(dirname(a.path), { recursive: true });
    // A socket file nobody answers on is left from a crash: replace it. One
    // that answers belongs to a running daemon: never steal it.
    if (await answers(a.path)) {
      throw new KilnError('already_exists', `another process is already serving on unix://${a.path}`, { field: '--addr' });
    }
    rmSync(a.path, { force: true });
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const done = () => {
      server.off('error', reject);
      resolve();
    };
    if (a.kind === 'unix') server.listen(a.path, done);
    else server.listen(a.port, a.host, done);
  });
  if (a.kind === 'unix') {
    chmodSync(a.path, 0o660);
    if (opts.socketGid !== undefined) chownSync(a.path, process.getuid?.() ?? 0, opts.socketGid);
  }
  const bound = server.address();
  const address: Address =
    a.kind === 'unix' ? a : { kind: 'tcp', host: a.host, port: typeof bound === 'object' && bound ? bound.port : a.port };
  return {
    address,
    async close(graceMs = 2000) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sessions) s.close();
      const timer = setTimeout(() => {
        for (const s of sessions) s.destroy();
      }, graceMs);
      await closed;
      clearTimeout(timer);
      if (a.kind === 'unix') rmSync(a.path, { force: true });
    },
  };
}

function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect(path);
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
}
