import { X509Certificate } from 'node:crypto';
import { formatAddress, InvalidArgumentError, isLocalAddress, loadTlsCredentials, roleOfCertificate, type Address, type Logger, type TierRole, type TlsCredentials } from '@kiln/common';
import type { DaemonOptions } from './options.js';

/**
 * Loads `--tlscacert/--tlscert/--tlskey` and checks the certificate names
 * `role` (a worker started with a solver's certificate would be refused by
 * every peer anyway; failing at start says why). Undefined without TLS.
 */
export function loadDaemonTls(opts: DaemonOptions, role: TierRole): TlsCredentials | undefined {
  if (!opts.tls) return undefined;
  const creds = loadTlsCredentials(opts.tls);
  let named: TierRole | undefined;
  try {
    named = roleOfCertificate({ subjectaltname: new X509Certificate(creds.cert).subjectAltName ?? '' });
  } catch (err) {
    throw new InvalidArgumentError(`--tlscert ${opts.tls.cert} is not a PEM certificate: ${(err as Error).message}`, '--tlscert', { cause: err });
  }
  if (named !== role) {
    throw new InvalidArgumentError(`--tlscert ${opts.tls.cert} names role "${named ?? 'none'}", but --tier ${opts.tier} needs a certificate with the SAN URI kiln://tier/${role}`, '--tlscert');
  }
  return creds;
}

/** Plain TCP reachable from other hosts: said loudly at every start. */
export function warnInsecureTcp(opts: DaemonOptions, addr: Address, log: Logger): void {
  if (addr.kind !== 'tcp' || opts.tls) return;
  if (!isLocalAddress(addr) && opts.insecureTcp) {
    log.warn({ listen: formatAddress(addr) }, 'serving plain TCP without authentication (--insecure-tcp): anyone who reaches this port can run builds and containers, read and delete content');
  }
}
