// The client against small fake servers (node:http) for what a real registry
// will not do on demand: token auth, 5xx and 429, cut connections, bad content.
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createRegistryClient, type RegistryClientOptions, type RetryEvent } from './client.js';
import { sessionCredentials, staticCredentials } from './credentials.js';
import { MediaType, type Descriptor } from './media.js';
import { parseReference } from './reference.js';

interface Fake {
  host: string;
  url: string;
  requests: { method: string; url: string; headers: IncomingMessage['headers'] }[];
  close(): Promise<void>;
}

const servers: Fake[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function serve(handler: (req: IncomingMessage, res: ServerResponse, n: number) => void | Promise<void>): Promise<Fake> {
  const requests: Fake['requests'] = [];
  const server = createServer((req, res) => {
    requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    req.resume();
    req.on('end', () => void handler(req, res, requests.length));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const fake: Fake = {
    host: `127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  servers.push(fake);
  return fake;
}

const digestOf = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const blobOf = (data: Buffer): Descriptor => ({ mediaType: MediaType.OciLayerGzip, digest: digestOf(data), size: data.length });
const manifestBytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: { mediaType: MediaType.OciConfig, digest: digestOf(Buffer.from('{}')), size: 2 }, layers: [] }));

function retrying(extra: RegistryClientOptions = {}) {
  const retries: RetryEvent[] = [];
  const client = createRegistryClient({ retry: { attempts: 4, baseDelayMs: 5, maxDelayMs: 20 }, onRetry: (e) => retries.push(e), ...extra });
  return { client, retries };
}

function sendManifest(res: ServerResponse, method: string | undefined): void {
  res.writeHead(200, { 'content-type': MediaType.OciManifest, 'docker-content-digest': digestOf(manifestBytes), 'content-length': manifestBytes.length });
  res.end(method === 'HEAD' ? undefined : manifestBytes);
}

async function collect(it: AsyncIterable<Uint8Array>, into?: Uint8Array[]): Promise<Buffer> {
  const parts = into ?? [];
  for await (const c of it) parts.push(c);
  return Buffer.concat(parts);
}

describe('bearer token flow', () => {
  it('gets a token from the realm with service, scope and basic credentials, and caches it per scope until expiry', async () => {
    let issued = 0;
    const tokens = await serve((req, res) => {
      const url = new URL(req.url!, 'http://x');
      if (req.headers.authorization !== `Basic ${Buffer.from('kiln:pw').toString('base64')}`) {
        res.writeHead(401).end();
        return;
      }
      issued++;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ token: `tok-${issued}-${url.searchParams.getAll('scope').join('+')}`, expires_in: 300 }));
    });
    const registry = await serve((req, res) => {
      const auth = req.headers.authorization ?? '';
      if (!auth.startsWith('Bearer tok-')) {
        res.writeHead(401, { 'www-authenticate': `Bearer realm="${tokens.url}/token",service="fake-registry",scope="repository:team/app:pull"` });
        res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
        return;
      }
      sendManifest(res, req.method);
    });
    let now = 1_000_000;
    const { client } = retrying({ credentials: staticCredentials({ [registry.host]: { username: 'kiln', password: 'pw' } }), now: () => now });
    const ref = parseReference(`${registry.host}/team/app:v1`);

    expect((await client.resolve(ref)).digest).toBe(digestOf(manifestBytes));
    expect(tokens.requests).toHaveLength(1);
    const tokenUrl = new URL(tokens.requests[0]!.url, 'http://x');
    expect(tokenUrl.pathname).toBe('/token');
    expect(tokenUrl.searchParams.get('service')).toBe('fake-registry');
    expect(tokenUrl.searchParams.getAll('scope')).toEqual(['repository:team/app:pull']);
    expect(registry.requests.map((r) => r.headers.authorization ?? 'none')).toEqual(['none', 'Bearer tok-1-repository:team/app:pull']);

    // Cached: the next calls go straight through with the same token.
    await client.resolve(ref);
    await client.getManifest(ref);
    expect(tokens.requests).toHaveLength(1);
    expect(registry.requests.slice(2).map((r) => r.headers.authorization)).toEqual(['Bearer tok-1-repository:team/app:pull', 'Bearer tok-1-repository:team/app:pull']);

    // Another scope (push, with a mount source) needs its own token.
    const blob = Buffer.from('x');
    const pushed = await client.pushBlob(
      ref,
      blobOf(blob),
      async function* () {
        yield blob;
      },
      undefined,
      { mountFrom: 'team/base' },
    );
    expect(pushed).toBe('exists'); // the fake answers 200 to every HEAD
    expect(new URL(tokens.requests[1]!.url, 'http://x').searchParams.getAll('scope')).toEqual(['repository:team/app:pull,push', 'repository:team/base:pull']);

    // Expired (5 minutes later): a new token.
    now += 301_000;
    await client.resolve(ref);
    expect(tokens.requests).toHaveLength(3);
  });

  it('derived clients ask their own store first and never reuse a token issued to other credentials', async () => {
    const users: Record<string, string> = { alice: 'a-pw', bob: 'b-pw' };
    let issued = 0;
    const tokens = await serve((req, res) => {
      const basic = Buffer.from((req.headers.authorization ?? '').replace(/^Basic /, ''), 'base64').toString();
      const [user, pw] = basic.split(':');
      if (!user || users[user] !== pw) {
        res.writeHead(401).end();
        return;
      }
      issued++;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ token: `tok-${user}-${issued}`, expires_in: 300 }));
    });
    const registry = await serve((req, res) => {
      if (!(req.headers.authorization ?? '').startsWith('Bearer tok-')) {
        res.writeHead(401, { 'www-authenticate': `Bearer realm="${tokens.url}/token",service="fake",scope="repository:team/app:pull"` }).end();
        return;
      }
      sendManifest(res, req.method);
    });
    const daemon = createRegistryClient({ credentials: staticCredentials({ [registry.host]: { username: 'bob', password: 'b-pw' } }) });
    const asked: string[] = [];
    const aliceSession = daemon.withCredentials(
      sessionCredentials(async (host) => {
        asked.push(host);
        return { username: 'alice', secret: 'a-pw' };
      }),
    );
    const emptySession = daemon.withCredentials(sessionCredentials(async () => ({ username: '', secret: '' })));
    const ref = parseReference(`${registry.host}/team/app:v1`);

    await aliceSession.resolve(ref);
    await aliceSession.resolve(ref);
    expect(asked).toEqual([registry.host]); // asked once per host per client
    // A session without credentials falls back to the daemon's (bob): a token of its own.
    await emptySession.resolve(ref);
    await daemon.resolve(ref); // same identity as emptySession: its token is reused
    const sent = registry.requests.map((r) => r.headers.authorization ?? 'none').filter((a) => a !== 'none');
    expect(sent).toEqual(['Bearer tok-alice-1', 'Bearer tok-alice-1', 'Bearer tok-bob-2', 'Bearer tok-bob-2']);
    expect(issued).toBe(2);
    expect(await aliceSession.credentialsKeyFor(registry.host)).not.toBe(await daemon.credentialsKeyFor(registry.host));
    expect(await emptySession.credentialsKeyFor(registry.host)).toBe(await daemon.credentialsKeyFor(registry.host));
    expect(await createRegistryClient().credentialsKeyFor(registry.host)).toBe('anonymous');
  });

  it('fails with unauthenticated naming the reference when the token server refuses the credentials', async () => {
    const tokens = await serve((_req, res) => void res.writeHead(401).end());
    const registry = await serve((_req, res) => {
      res.writeHead(401, { 'www-authenticate': `Bearer realm="${tokens.url}/token",service="fake"` }).end();
    });
    const { client } = retrying({ credentials: staticCredentials({ [registry.host]: { username: 'kiln', password: 'wrong' } }) });
    await expect(client.resolve(parseReference(`${registry.host}/team/app:v1`))).rejects.toMatchObject({
      code: 'unauthenticated',
      message: expect.stringMatching(new RegExp(`^failed to resolve ${registry.host}/team/app:v1: token server .* refused the credentials \\(HTTP 401\\)`)),
    });
  });

  it('exchanges an identity token (OAuth2 refresh token) with a POST to the realm', async () => {
    let form: URLSearchParams | undefined;
    const server = await serve((req, res) => {
      if (req.url!.startsWith('/token')) {
        res.writeHead(200).end(JSON.stringify({ access_token: 'from-refresh' }));
        return;
      }
      if (req.headers.authorization !== 'Bearer from-refresh') {
        res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${req.headers.host}/token",service="svc"` }).end();
        return;
      }
      sendManifest(res, req.method);
    });
    // Capture the POSTed form through an injected fetch.
    const { client } = retrying({
      credentials: staticCredentials({ [server.host]: { identityToken: 'refresh-me' } }),
      fetch: async (input, init) => {
        if (init?.method === 'POST') form = new URLSearchParams(String(init.body));
        return fetch(input, init);
      },
    });
    await client.resolve(parseReference(`${server.host}/a/b:c`));
    expect(Object.fromEntries(form!)).toEqual({ grant_type: 'refresh_token', refresh_token: 'refresh-me', client_id: 'kiln', service: 'svc', scope: 'repository:a/b:pull' });
  });

  it('retries once with a fresh token when the registry refuses one, then gives up', async () => {
    let issued = 0;
    const tokens = await serve((_req, res) => void res.writeHead(200).end(JSON.stringify({ access_token: `t${++issued}` })));
    const registry = await serve((_req, res) => {
      res.writeHead(401, { 'www-authenticate': `Bearer realm="${tokens.url}/token"` }).end();
    });
    const { client } = retrying();
    await expect(client.resolve(parseReference(`${registry.host}/a/b:c`))).rejects.toMatchObject({ code: 'unauthenticated', message: `failed to resolve ${registry.host}/a/b:c: unauthorized (HTTP 401)` });
    expect(registry.requests.map((r) => r.headers.authorization ?? 'none')).toEqual(['none', 'Bearer t1']);
  });
});

describe('retries', () => {
  it('retries 503 and 429 honouring Retry-After, then succeeds', async () => {
    const registry = await serve((req, res, n) => {
      if (n === 1) res.writeHead(503, { 'retry-after': '0' }).end();
      else if (n === 2) res.writeHead(429, { 'retry-after': '120' }).end();
      else if (n === 3) res.writeHead(502).end();
      else sendManifest(res, req.method);
    });
    const { client, retries } = retrying({ retry: { attempts: 5, baseDelayMs: 5, maxDelayMs: 20, maxRetryAfterMs: 30 } });
    expect((await client.resolve(parseReference(`${registry.host}/a/b:c`))).digest).toBe(digestOf(manifestBytes));
    expect(retries.map((r) => [r.reason, r.delayMs])).toEqual([
      ['HTTP 503', 0],
      ['HTTP 429', 30], // 120 s capped
      ['HTTP 502', expect.any(Number)],
    ]);
    expect(retries[0]!.what).toBe(`failed to resolve ${registry.host}/a/b:c`);
  });

  it('gives up after the bounded attempts with unavailable naming the reference', async () => {
    const registry = await serve((_req, res) => void res.writeHead(500).end(JSON.stringify({ errors: [{ code: 'UNKNOWN', message: 'disk on fire' }] })));
    const { client } = retrying({ retry: { attempts: 3, baseDelayMs: 1, maxDelayMs: 2 } });
    await expect(client.getManifest(parseReference(`${registry.host}/a/b:c`))).rejects.toMatchObject({
      code: 'unavailable',
      message: `failed to get manifest ${registry.host}/a/b:c: registry error (HTTP 500) (UNKNOWN: disk on fire)`,
    });
    expect(registry.requests).toHaveLength(3);
  });

  it('never retries other 4xx', async () => {
    const registry = await serve((req, res) => {
      const status = req.url!.includes('forbidden') ? 403 : 400;
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ errors: [{ code: 'DENIED', message: 'no' }] }));
    });
    const { client, retries } = retrying();
    await expect(client.getManifest(parseReference(`${registry.host}/a/forbidden:c`))).rejects.toMatchObject({ code: 'permission_denied', message: expect.stringContaining('permission denied (DENIED: no)') });
    await expect(client.getManifest(parseReference(`${registry.host}/a/bad:c`))).rejects.toMatchObject({ code: 'invalid_argument' });
    expect(registry.requests).toHaveLength(2);
    expect(retries).toHaveLength(0);
  });

  it('retries a refused connection, then fails with unavailable', async () => {
    const registry = await serve(() => {});
    const host = registry.host;
    await registry.close();
    const { client, retries } = retrying({ retry: { attempts: 3, baseDelayMs: 1, maxDelayMs: 2 } });
    await expect(client.resolve(parseReference(`${host}/a/b:c`))).rejects.toMatchObject({
      code: 'unavailable',
      message: expect.stringMatching(new RegExp(`^failed to resolve ${host}/a/b:c: .*ECONNREFUSED`)),
    });
    expect(retries).toHaveLength(2);
  });

  it('stops waiting when the signal aborts', async () => {
    const registry = await serve((_req, res) => void res.writeHead(503, { 'retry-after': '10' }).end());
    const client = createRegistryClient({ retry: { maxRetryAfterMs: 10_000 } });
    const started = Date.now();
    await expect(client.resolve(parseReference(`${registry.host}/a/b:c`), AbortSignal.timeout(100))).rejects.toMatchObject({ code: 'canceled' });
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('restarts an upload whose PUT failed with 503, reading the data again', async () => {
    let puts = 0;
    const registry = await serve((req, res) => {
      if (req.method === 'HEAD') res.writeHead(404).end();
      else if (req.method === 'POST') res.writeHead(202, { location: `/v2/a/b/blobs/uploads/u${Math.random()}` }).end();
      else if (req.method === 'PUT') res.writeHead(++puts === 1 ? 503 : 201).end();
      else res.writeHead(500).end();
    });
    const data = randomBytes(1000);
    let reads = 0;
    const { client, retries } = retrying();
    const result = await client.pushBlob(parseReference(`${registry.host}/a/b`), blobOf(data), async function* () {
      reads++;
      yield data;
    });
    expect(result).toBe('uploaded');
    expect(reads).toBe(2);
    expect(registry.requests.map((r) => r.method)).toEqual(['HEAD', 'POST', 'PUT', 'POST', 'PUT']);
    expect(new URL(registry.requests[4]!.url, 'http://x').searchParams.get('digest')).toBe(digestOf(data));
    expect(retries).toHaveLength(1);
  });
});

describe('blob fetch', () => {
  const data = randomBytes(300_000);
  const desc = blobOf(data);

  /** Serves `data`, cutting the connection after `cutAt` bytes on the first `cuts` requests; honours Range unless told not to. */
  function cutting(cuts: number, cutAt: number, honourRange = true) {
    return serve((req, res, n) => {
      const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
      const start = m && honourRange ? Number(m[1]) : 0;
      const body = data.subarray(start);
      res.writeHead(start ? 206 : 200, {
        'content-length': body.length,
        'content-type': 'application/octet-stream',
        ...(start ? { 'content-range': `bytes ${start}-${data.length - 1}/${data.length}` } : {}),
      });
      if (n <= cuts) {
        res.flushHeaders();
        res.write(body.subarray(0, cutAt), () => setTimeout(() => res.socket?.destroy(), 20));
      } else res.end(body);
    });
  }

  it('resumes with Range from the offset received after a connection cut', async () => {
    const registry = await cutting(2, 100_000);
    const { client, retries } = retrying();
    const got = await collect(client.fetch(parseReference(`${registry.host}/a/b`), desc));
    expect(got.equals(data)).toBe(true);
    expect(registry.requests.map((r) => r.headers.range ?? 'none')).toEqual(['none', 'bytes=100000-', 'bytes=200000-']);
    expect(retries.map((r) => r.reason)).toEqual([expect.stringMatching(/at byte 100000$/), expect.stringMatching(/at byte 200000$/)]);
  });

  it('resumes correctly from a server that ignores Range', async () => {
    const registry = await cutting(1, 150_000, false);
    const { client } = retrying();
    const got = await collect(client.fetch(parseReference(`${registry.host}/a/b`), desc));
    expect(got.equals(data)).toBe(true);
    expect(registry.requests.map((r) => r.headers.range ?? 'none')).toEqual(['none', 'bytes=150000-']);
  });

  it('stops a stalled stream when the signal aborts', async () => {
    const registry = await serve((_req, res) => {
      res.writeHead(200, { 'content-length': data.length });
      res.write(data.subarray(0, 1000)); // then stalls
    });
    const { client } = retrying();
    const ac = new AbortController();
    const received: Uint8Array[] = [];
    setTimeout(() => ac.abort(), 100);
    await expect(collect(client.fetch(parseReference(`${registry.host}/a/b`), desc, ac.signal), received)).rejects.toMatchObject({ code: 'canceled' });
  });

  it('rejects content that does not match the digest and holds the last chunk back', async () => {
    const evil = Buffer.from(data);
    evil[evil.length - 1] = evil.at(-1)! ^ 0xff;
    const registry = await serve((_req, res) => void res.writeHead(200, { 'content-length': evil.length }).end(evil));
    const { client } = retrying();
    const received: Uint8Array[] = [];
    await expect(collect(client.fetch(parseReference(`${registry.host}/a/b:c`), desc), received)).rejects.toMatchObject({
      code: 'failed_precondition',
      message: `failed to fetch ${registry.host}/a/b@${desc.digest}: digest mismatch: content is ${digestOf(evil)}`,
    });
    const got = received.reduce((n, c) => n + c.length, 0);
    expect(got).toBeLessThan(data.length);
  });

  it('rejects a blob longer or shorter than its descriptor', async () => {
    const registry = await serve((req, res) => {
      const body = req.url!.includes('long') ? Buffer.concat([data, Buffer.from('x')]) : data.subarray(1);
      res.writeHead(200).end(body); // chunked: no content-length to check up front
    });
    const { client } = retrying();
    await expect(collect(client.fetch(parseReference(`${registry.host}/a/long`), desc))).rejects.toMatchObject({ code: 'failed_precondition', message: expect.stringContaining('more than 300000 bytes') });
    await expect(collect(client.fetch(parseReference(`${registry.host}/a/short`), desc))).rejects.toMatchObject({ code: 'failed_precondition', message: expect.stringContaining('got 299999 bytes') });
  });

  it('rejects a manifest whose bytes do not match the digest asked for', async () => {
    const registry = await serve((req, res) => sendManifest(res, req.method));
    const { client } = retrying();
    const wanted = `sha256:${'1'.repeat(64)}`;
    await expect(client.getManifest(parseReference(`${registry.host}/a/b@${wanted}`))).rejects.toMatchObject({
      code: 'failed_precondition',
      message: `failed to get manifest ${registry.host}/a/b@${wanted}: digest mismatch: content is ${digestOf(manifestBytes)}, want ${wanted}`,
    });
  });
});
