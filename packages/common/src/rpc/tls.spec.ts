import { createContextValues, type UnaryRequest } from '@connectrpc/connect';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import http2 from 'node:http2';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAddress } from './address.js';
import { authorizationInterceptor, peerKey, type AccessTable, type Peer } from './peer.js';
import { loadTlsCredentials, proveEndpointRole, roleOfCertificate, type TlsCredentials } from './tls.js';
import { serveRoutes, type RpcServer } from './transport.js';

function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'nx.json'))) dir = dirname(dir);
  return dir;
}

/** Certificates from tools/make-certs.sh (openssl), one per role. */
let dir: string;
const creds = (name: string): TlsCredentials => loadTlsCredentials({ caCert: join(dir, 'ca.pem'), cert: join(dir, `${name}.pem`), key: join(dir, `${name}-key.pem`) });

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'kiln-tls-'));
  execFileSync(join(repoRoot(), 'tools', 'make-certs.sh'), [dir, 'worker', 'solver', 'client']);
  // A second CA: a certificate it signed names a role but is not the cluster's.
  execFileSync(join(repoRoot(), 'tools', 'make-certs.sh'), [join(dir, 'other'), 'solver']);
}, 60_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Opens an HTTP/2 session and makes one GET; resolves with the status or the error message. */
function h2get(url: string, opts: http2.SecureClientSessionOptions = {}): Promise<number | string> {
  return new Promise((resolve) => {
    const session = http2.connect(url, opts);
    session.on('error', (err) => resolve(err.message));
    session.on('close', () => resolve('closed'));
    const req = session.request({ ':path': '/' });
    req.on('response', (h) => {
      resolve(Number(h[':status']));
      session.close();
    });
    req.on('error', (err) => resolve(err.message));
    req.on('close', () => resolve('closed'));
    req.end();
  });
}

describe('serveRoutes with mutual TLS', () => {
  let server: RpcServer;
  let url: string;
  beforeAll(async () => {
    server = await serveRoutes('tcp://127.0.0.1:0', () => undefined, { tls: creds('worker') });
    url = `https://127.0.0.1:${server.address.kind === 'tcp' ? server.address.port : 0}`;
  });
  afterAll(() => server.close());

  it('lets a client with a cluster certificate reach HTTP', async () => {
    const c = creds('solver');
    expect(await h2get(url, { ca: c.ca, cert: c.cert, key: c.key })).toBe(404);
  });

  it('refuses plain h2c, TLS without a client certificate, and a certificate of another CA', { timeout: 20_000 }, async () => {
    expect(await h2get(url.replace('https', 'http'))).toEqual(expect.any(String));
    expect(await h2get(url, { ca: creds('solver').ca })).toEqual(expect.any(String));
    const other = loadTlsCredentials({ caCert: join(dir, 'ca.pem'), cert: join(dir, 'other', 'solver.pem'), key: join(dir, 'other', 'solver-key.pem') });
    expect(await h2get(url, { ca: other.ca, cert: other.cert, key: other.key })).toEqual(expect.any(String));
  });

  it('proves the endpoint role: worker yes, solver no', async () => {
    const addr = server.address;
    expect(await proveEndpointRole(addr, creds('solver'), ['worker'])).toEqual({ ok: true });
    expect(await proveEndpointRole(addr, creds('solver'), ['solver'])).toMatchObject({ ok: false, reason: expect.stringContaining('proved role "worker"') });
  });

  it('does not accept a client certificate as a server', async () => {
    const rogue = await serveRoutes('tcp://127.0.0.1:0', () => undefined, { tls: creds('client') });
    expect(await proveEndpointRole(rogue.address, creds('solver'), ['worker'])).toMatchObject({ ok: false });
    await rogue.close();
  });
});

describe('serveRoutes on plain TCP', () => {
  it('refuses a non-loopback address unless insecureTcp', async () => {
    await expect(serveRoutes('tcp://0.0.0.0:0', () => undefined)).rejects.toMatchObject({ code: 'invalid_argument', details: { field: '--insecure-tcp' } });
    const srv = await serveRoutes('tcp://0.0.0.0:0', () => undefined, { insecureTcp: true });
    await srv.close();
    expect(() => parseAddress('tcp://0.0.0.0:1')).not.toThrow();
  });
});

describe('roleOfCertificate', () => {
  it('reads the kiln://tier/<role> SAN URI and nothing else', () => {
    expect(roleOfCertificate({ subjectaltname: 'DNS:localhost, URI:kiln://tier/worker, IP Address:127.0.0.1' })).toBe('worker');
    expect(roleOfCertificate({ subjectaltname: 'URI:kiln://tier/root' })).toBeUndefined();
    expect(roleOfCertificate({ subjectaltname: 'DNS:kiln://tier/worker' })).toBeUndefined();
    expect(roleOfCertificate(undefined)).toBeUndefined();
  });
});

describe('authorizationInterceptor', () => {
  const table: AccessTable = { 'k.S': { Run: ['solver'], '*': ['solver', 'exporters'] } };
  const call = (peer: Peer | undefined, method: string) => {
    const req = { contextValues: createContextValues().set(peerKey, peer), service: { typeName: 'k.S' }, method: { name: method } } as unknown as UnaryRequest;
    return authorizationInterceptor(table, { requireTls: true })(async () => ({}) as never)(req).then(
      () => 'ok',
      (err: { code: string }) => err.code,
    );
  };
  it('allows the table roles, refuses others, passes local and in-process callers', async () => {
    expect(await call({ kind: 'tls', role: 'solver', remote: 'x' }, 'Run')).toBe('ok');
    expect(await call({ kind: 'tls', role: 'exporters', remote: 'x' }, 'Run')).toBe('permission_denied');
    expect(await call({ kind: 'tls', role: 'exporters', remote: 'x' }, 'Describe')).toBe('ok');
    expect(await call({ kind: 'tls', role: 'client', remote: 'x' }, 'Describe')).toBe('permission_denied');
    expect(await call({ kind: 'tcp', remote: 'x' }, 'Describe')).toBe('unauthenticated');
    expect(await call({ kind: 'local' }, 'Run')).toBe('ok');
    expect(await call(undefined, 'Run')).toBe('ok');
  });
});
