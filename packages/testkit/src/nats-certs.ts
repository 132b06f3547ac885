import { execFile } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** PEM files of a CA and of one server and one client certificate it signed, for NATS over TLS. */
export interface NatsCerts {
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

/**
 * Makes, with Debian's openssl, a CA in `dir` (kept if present), a server
 * certificate for 127.0.0.1/localhost and a client certificate (as
 * README "NATS" shows). P-256 keys: quick to make.
 */
export async function makeNatsCerts(dir: string): Promise<NatsCerts> {
  const f = (name: string) => join(dir, name);
  if (!existsSync(f('ca.pem'))) {
    await run('openssl', ['req', '-x509', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('ca-key.pem'), '-out', f('ca.pem'), '-days', '2', '-subj', '/CN=kiln test CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  }
  const issue = async (name: string, usage: string) => {
    writeFileSync(f(`${name}.ext`), `basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=${usage}\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n`);
    await run('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f(`${name}-key.pem`), '-out', f(`${name}.csr`), '-subj', `/CN=${name}`]);
    await run('openssl', ['x509', '-req', '-in', f(`${name}.csr`), '-CA', f('ca.pem'), '-CAkey', f('ca-key.pem'), '-CAcreateserial', '-days', '2', '-extfile', f(`${name}.ext`), '-out', f(`${name}.pem`)]);
  };
  await issue('nats-server', 'serverAuth'); // one after the other: they share the CA's serial file
  await issue('nats-client', 'clientAuth');
  return { ca: f('ca.pem'), serverCert: f('nats-server.pem'), serverKey: f('nats-server-key.pem'), clientCert: f('nats-client.pem'), clientKey: f('nats-client-key.pem') };
}
