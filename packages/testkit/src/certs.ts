import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { repoRoot } from './kilnd.js';

/** The PEM files of one certificate, as `kiln daemon`/CLI flags take them. */
export interface CertFiles {
  caCert: string;
  cert: string;
  key: string;
}

/** A cluster CA and certificates made by tools/make-certs.sh (Debian's openssl). */
export interface ClusterCerts {
  readonly dir: string;
  /** The files of certificate `name` (made by `makeClusterCerts` or `add`). */
  files(name: string): CertFiles;
  /** `--tlscacert F --tlscert F --tlskey F` for certificate `name`. */
  args(name: string): string[];
  /** KILN_TLS_CACERT/CERT/KEY for certificate `name` (the CLI reads them). */
  env(name: string): Record<string, string>;
  /** Makes more certificates signed by the same CA: `NAME[:ROLE]` each. */
  add(...specs: string[]): Promise<void>;
}

/** The default set: one certificate per role, named after it. */
export const CLUSTER_ROLES = ['solver', 'frontend', 'worker', 'content', 'exporters', 'client'] as const;

/** Makes a CA and `specs` (`NAME[:ROLE]`, default one per role) in `dir`. */
export async function makeClusterCerts(dir: string, specs: readonly string[] = CLUSTER_ROLES): Promise<ClusterCerts> {
  const make = async (list: readonly string[]) => {
    await promisify(execFile)(join(repoRoot(), 'tools', 'make-certs.sh'), [dir, ...list]);
  };
  await make(specs);
  const files = (name: string): CertFiles => ({ caCert: join(dir, 'ca.pem'), cert: join(dir, `${name}.pem`), key: join(dir, `${name}-key.pem`) });
  return {
    dir,
    files,
    args: (name) => {
      const f = files(name);
      return ['--tlscacert', f.caCert, '--tlscert', f.cert, '--tlskey', f.key];
    },
    env: (name) => {
      const f = files(name);
      return { KILN_TLS_CACERT: f.caCert, KILN_TLS_CERT: f.cert, KILN_TLS_KEY: f.key };
    },
    add: (...more) => make(more),
  };
}
