import { readFileSync } from 'node:fs';
import type { PeerCertificate } from 'node:tls';
import net from 'node:net';
import tls from 'node:tls';
import { InvalidArgumentError, KilnError } from '../errors/errors.js';
import type { Address } from './address.js';

/**
 * The roles a cluster certificate can name. Each tier has its own role;
 * `client` is the CLI (or any other build client).
 */
export const TIER_ROLES = ['solver', 'frontend', 'worker', 'content', 'exporters', 'client'] as const;
export type TierRole = (typeof TIER_ROLES)[number];

/** A certificate names its role with the SAN URI `kiln://tier/<role>`. */
export const ROLE_URI_PREFIX = 'kiln://tier/';

/** Paths of the PEM files, as given by `--tlscacert`, `--tlscert`, `--tlskey`. */
export interface TlsFiles {
  caCert: string;
  cert: string;
  key: string;
}

/** The loaded PEM contents: the cluster CA, and this process's certificate and key. */
export interface TlsCredentials {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

/**
 * Reads the three PEM files. A missing or unreadable file is an
 * InvalidArgumentError naming the flag (`<flagPrefix>cacert` etc.).
 */
export function loadTlsCredentials(files: TlsFiles, flagPrefix = '--tls'): TlsCredentials {
  const read = (path: string, flag: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new InvalidArgumentError(`cannot read ${flag} ${path}: ${(err as Error).message}`, flag, { cause: err });
    }
  };
  const out = { ca: read(files.caCert, `${flagPrefix}cacert`), cert: read(files.cert, `${flagPrefix}cert`), key: read(files.key, `${flagPrefix}key`) };
  try {
    tls.createSecureContext(out);
  } catch (err) {
    throw new InvalidArgumentError(`invalid TLS files (${files.caCert}, ${files.cert}, ${files.key}): ${(err as Error).message}`, `${flagPrefix}cert`, { cause: err });
  }
  return out;
}

/** The role a certificate names (its first `kiln://tier/<role>` SAN URI), or undefined. */
export function roleOfCertificate(cert: Pick<PeerCertificate, 'subjectaltname'> | undefined): TierRole | undefined {
  const san = cert?.subjectaltname;
  if (!san) return undefined;
  for (const entry of san.split(/,\s*/)) {
    if (!entry.startsWith(`URI:${ROLE_URI_PREFIX}`)) continue;
    const role = entry.slice(`URI:${ROLE_URI_PREFIX}`.length);
    if ((TIER_ROLES as readonly string[]).includes(role)) return role as TierRole;
  }
  return undefined;
}

/**
 * A `checkServerIdentity` for clients inside the cluster: the chain is
 * already verified against the cluster CA; the identity that matters is
 * the role the certificate names, not the host name (tiers announce
 * addresses, which the CA cannot know in advance).
 */
export function expectServerRole(roles: readonly TierRole[] | undefined): (host: string, cert: PeerCertificate) => Error | undefined {
  return (host, cert) => {
    const role = roleOfCertificate(cert);
    if (!role || role === 'client') return new KilnError('unauthenticated', `the server at ${host} has no tier role in its certificate (want a ${ROLE_URI_PREFIX}<role> SAN URI)`);
    if (roles && !roles.includes(role)) return new KilnError('unauthenticated', `the server at ${host} proved role "${role}", want ${roles.join(' or ')}`);
    return undefined;
  };
}

/** True for an address only this host can reach (loopback TCP or a unix socket). */
export function isLocalAddress(a: Address): boolean {
  if (a.kind === 'unix') return true;
  return a.host === 'localhost' || a.host === '::1' || /^127\./.test(a.host);
}

/**
 * Resolves true once `addr` completes a TLS handshake proving one of
 * `roles` with a certificate the cluster CA signed; false on any failure
 * (refused, plain TCP, wrong CA, wrong role) or after `timeoutMs`.
 */
export function proveEndpointRole(addr: Address, creds: TlsCredentials, roles: readonly TierRole[], timeoutMs = 5000): Promise<{ ok: true } | { ok: false; reason: string }> {
  if (addr.kind !== 'tcp') return Promise.resolve({ ok: false, reason: 'not a tcp address' });
  return new Promise((resolve) => {
    const sock = tls.connect({
      host: addr.host,
      port: addr.port,
      ca: creds.ca,
      cert: creds.cert,
      key: creds.key,
      ALPNProtocols: ['h2'],
      checkServerIdentity: expectServerRole(roles),
      ...(net.isIP(addr.host) ? {} : { servername: addr.host }),
    });
    const finish = (r: { ok: true } | { ok: false; reason: string }) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => finish({ ok: false, reason: `no TLS handshake within ${timeoutMs} ms` }), timeoutMs);
    sock.once('secureConnect', () => finish({ ok: true }));
    sock.once('error', (err) => finish({ ok: false, reason: err.message }));
  });
}
