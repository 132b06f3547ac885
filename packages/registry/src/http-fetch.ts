import http from 'node:http';
import https from 'node:https';
import { Readable } from 'node:stream';

/**
 * Ports the fetch standard blocks ("bad ports"), which Node's global fetch
 * (undici) refuses to connect to. A registry may listen on any of them
 * (docker pulls from 127.0.0.1:6000 or :10080 fine).
 */
export const FETCH_BAD_PORTS: ReadonlySet<number> = new Set([
  0, 1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95, 101, 102, 103, 104, 109, 110, 111, 113, 115, 117, 119,
  123, 135, 137, 139, 143, 161, 179, 389, 427, 465, 512, 513, 514, 515, 526, 530, 531, 532, 540, 548, 554, 556, 563, 587, 601, 636, 989, 990,
  993, 995, 1719, 1720, 1723, 2049, 3659, 4045, 4190, 5060, 5061, 6000, 6566, 6665, 6666, 6667, 6668, 6669, 6679, 6697, 10080,
]);

const NULL_BODY_STATUS = new Set([101, 103, 204, 205, 304]);
const REDIRECT_STATUS = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 20;
// Made on first use: importing this module (the CLI does on every run) stays free
// of sockets and agents, so the CLI's start-up snapshot can hold it (tools/cli-snapshot.mjs).
let agents: { 'http:': http.Agent; 'https:': https.Agent } | undefined;
function agentFor(protocol: 'http:' | 'https:'): http.Agent {
  agents ??= { 'http:': new http.Agent({ keepAlive: true }), 'https:': new https.Agent({ keepAlive: true }) };
  return agents[protocol];
}

/** The port a URL connects to (its default port when it names none). */
function portOf(url: URL): number {
  return url.port ? Number(url.port) : url.protocol === 'https:' ? 443 : 80;
}

/**
 * The registry client's fetch: the global fetch, except for URLs on a port
 * the fetch standard blocks, which go through `nodeHttpFetch`.
 */
export const registryFetch: typeof globalThis.fetch = (input, init) => {
  const url = new URL(input instanceof Request ? input.url : String(input));
  return FETCH_BAD_PORTS.has(portOf(url)) ? nodeHttpFetch(url, init) : globalThis.fetch(input, init);
};

/**
 * What the registry client needs of fetch, over node:http/https (which
 * connect to any port): method, headers, a string/bytes/ReadableStream body,
 * an abort signal and redirects (followed as fetch does: 303, and 301/302
 * of a POST, turn into a GET without body; Authorization is dropped when
 * the redirect leaves the origin). Bodies are not decoded (no
 * accept-encoding is sent). Connection failures reject with fetch's
 * `TypeError('fetch failed')` carrying the socket error as cause.
 */
export async function nodeHttpFetch(input: URL | string, init: RequestInit = {}): Promise<Response> {
  let url = new URL(String(input));
  let method = (init.method ?? 'GET').toUpperCase();
  const headers = headerRecord(init.headers);
  let body = init.body ?? undefined;
  for (let redirects = 0; ; redirects++) {
    const res = await requestOnce(url, method, headers, body, init.signal ?? undefined);
    const status = res.statusCode ?? 0;
    const location = res.headers.location;
    if (!REDIRECT_STATUS.has(status) || !location || init.redirect === 'manual') return toResponse(res, url, method);
    res.resume();
    if (init.redirect === 'error') throw new TypeError('fetch failed', { cause: new Error(`unexpected redirect to ${location}`) });
    if (redirects >= MAX_REDIRECTS) throw new TypeError('fetch failed', { cause: new Error('redirect count exceeded') });
    const next = new URL(location, url);
    if (status === 303 ? method !== 'HEAD' : (status === 301 || status === 302) && method === 'POST') {
      method = 'GET';
      body = undefined;
      for (const h of ['content-type', 'content-length', 'content-encoding', 'content-language', 'content-location']) delete headers[h];
    } else if (body instanceof ReadableStream) {
      // A stream was consumed by the first request: fetch cannot replay it either.
      throw new TypeError('fetch failed', { cause: new Error(`cannot follow a ${status} redirect with a streamed body`) });
    }
    if (next.origin !== url.origin) {
      delete headers.authorization;
      delete headers.cookie;
      delete headers['proxy-authorization'];
    }
    url = next;
  }
}

function headerRecord(h: RequestInit['headers']): Record<string, string> {
  const out: Record<string, string> = {};
  if (!h) return out;
  const entries: [string, unknown][] = h instanceof Headers ? [...h.entries()] : Array.isArray(h) ? (h as [string, string][]) : Object.entries(h);
  for (const [k, v] of entries) out[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : String(v);
  return out;
}

function requestOnce(url: URL, method: string, headers: Record<string, string>, body: RequestInit['body'] | undefined, signal: AbortSignal | undefined): Promise<http.IncomingMessage> {
  const protocol = url.protocol as 'http:' | 'https:';
  if (protocol !== 'http:' && protocol !== 'https:') return Promise.reject(new TypeError('fetch failed', { cause: new Error(`unsupported protocol ${url.protocol}`) }));
  let bytes: Uint8Array | undefined;
  if (typeof body === 'string') bytes = Buffer.from(body);
  else if (body instanceof Uint8Array) bytes = body;
  else if (body instanceof ArrayBuffer) bytes = new Uint8Array(body);
  else if (body instanceof URLSearchParams) bytes = Buffer.from(body.toString());
  else if (body !== undefined && !(body instanceof ReadableStream)) return Promise.reject(new TypeError(`unsupported request body ${Object.prototype.toString.call(body)}`));
  const sent = { ...headers };
  if (bytes) sent['content-length'] = String(bytes.length);
  else if (body === undefined && (method === 'POST' || method === 'PUT' || method === 'PATCH')) sent['content-length'] = '0';
  return new Promise((resolve, reject) => {
    const fail = (err: unknown) => reject(signal?.aborted ? signal.reason : new TypeError('fetch failed', { cause: err }));
    const mod = protocol === 'https:' ? https : http;
    const req = mod.request(url, { method, headers: sent, agent: agentFor(protocol), ...(signal ? { signal } : {}) }, resolve);
    req.once('error', fail);
    if (body instanceof ReadableStream) {
      const src = Readable.fromWeb(body as import('node:stream/web').ReadableStream);
      src.once('error', (err) => req.destroy(err));
      src.pipe(req);
    } else {
      req.end(bytes);
    }
  });
}

function toResponse(res: http.IncomingMessage, url: URL, method: string): Response {
  const status = res.statusCode ?? 0;
  const headers = new Headers();
  for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) headers.append(res.rawHeaders[i]!, res.rawHeaders[i + 1]!);
  const empty = NULL_BODY_STATUS.has(status) || method === 'HEAD';
  if (empty) res.resume();
  const response = new Response(empty ? null : (Readable.toWeb(res) as ReadableStream<Uint8Array>), { status, statusText: res.statusMessage ?? '', headers });
  // A constructed Response has no URL; the client resolves relative Locations against it.
  Object.defineProperty(response, 'url', { value: url.href });
  return response;
}
