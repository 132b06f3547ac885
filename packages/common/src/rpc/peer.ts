import { createContextKey, type Interceptor } from '@connectrpc/connect';
import type http2 from 'node:http2';
import type { TLSSocket } from 'node:tls';
import { KilnError } from '../errors/errors.js';
import { roleOfCertificate, type TierRole } from './tls.js';

/**
 * Who is calling, as the transport proved it:
 * - `local`: over the daemon's unix socket (the socket's owner/group);
 * - `tls`: over mutual TLS, with the role its cluster certificate names;
 * - `tcp`: plain TCP (loopback, or `--insecure-tcp`): nothing is proven.
 * An in-process call (all-in-one daemon, tests) carries no peer.
 */
export type Peer = { kind: 'local' } | { kind: 'tls'; role: TierRole; remote: string } | { kind: 'tcp'; remote: string };

/** The caller's Peer in a handler's `ctx.values`; undefined for in-process calls. */
export const peerKey = createContextKey<Peer | undefined>(undefined, { description: 'kiln rpc peer' });

/** A TCP peer (plain or TLS): one that may be on another host. */
export const isRemotePeer = (p: Peer | undefined): boolean => p !== undefined && p.kind !== 'local';

/** Reads the Peer of an incoming HTTP/2 request from its connection. */
export function peerOfRequest(req: http2.Http2ServerRequest): Peer {
  const sock = req.stream?.session?.socket as (TLSSocket & { encrypted?: boolean }) | undefined;
  if (!sock || sock.remoteAddress === undefined) return { kind: 'local' };
  const remote = `${sock.remoteAddress}:${sock.remotePort}`;
  if (!sock.encrypted) return { kind: 'tcp', remote };
  // The server requires and verifies client certificates: an authorized
  // socket's certificate chains to the cluster CA.
  const role = sock.authorized ? roleOfCertificate(sock.getPeerCertificate()) : undefined;
  if (!role) return { kind: 'tcp', remote }; // unreachable with rejectUnauthorized; refused below anyway
  return { kind: 'tls', role, remote };
}

/**
 * Which roles may call which method: `table[service typeName][method name]`.
 * `'*'` as a method name is the service's default. A method not listed is
 * refused to every TLS peer.
 */
export type AccessTable = Readonly<Record<string, Readonly<Record<string, readonly TierRole[]>>>>;

/** The roles `table` allows on `service`/`method` (empty when none). */
export function allowedRoles(table: AccessTable, service: string, method: string): readonly TierRole[] {
  const s = table[service];
  return s?.[method] ?? s?.['*'] ?? [];
}

/**
 * Refuses a call whose TLS peer's role `table` does not allow, with
 * KilnError `permission_denied`. When `requireTls` is set, a peer that
 * proved no role (plain TCP) is refused with `unauthenticated`. Unix-socket
 * and in-process callers are not checked: they are the host's own.
 */
export function authorizationInterceptor(table: AccessTable, opts: { requireTls: boolean }): Interceptor {
  return (next) => async (req) => {
    const peer = req.contextValues.get(peerKey);
    const method = `${req.service.typeName}/${req.method.name}`;
    if (peer?.kind === 'tcp' && opts.requireTls) {
      throw new KilnError('unauthenticated', `failed to call ${method}: the caller presented no cluster certificate`);
    }
    if (peer?.kind === 'tls' && !allowedRoles(table, req.service.typeName, req.method.name).includes(peer.role)) {
      throw new KilnError('permission_denied', `failed to call ${method}: role "${peer.role}" may not call it`, { role: peer.role, method });
    }
    return next(req);
  };
}
