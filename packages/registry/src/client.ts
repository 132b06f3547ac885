import { createHash, type Hash } from 'node:crypto';
import { CanceledError, InvalidArgumentError, KilnError, sleep, type ErrorCode } from '@kiln/common';
import { AuthCache, Authorizer, parseChallenges } from './auth.js';
import { registryFetch } from './http-fetch.js';
import { chainCredentials, credentialsKey, type CredentialStore } from './credentials.js';
import { baseMediaType, isManifestType, MANIFEST_TYPES, parseManifest, type Descriptor } from './media.js';
import { formatReference, type Reference } from './reference.js';
import type { Manifest, PushBlobOptions, PushBlobResult, RegistryClient } from './registry.js';
import { DEFAULT_RETRY, isNetworkError, isRetryableStatus, networkReason, parseRetryAfter, retryDelay, type RetryPolicy } from './retry.js';

/** One retry the client is about to make (after `delayMs`). */
export interface RetryEvent {
  /** What failed, naming the reference ("failed to fetch host/repo@sha256:..."). */
  what: string;
  /** The retry's number, 1 for the first. */
  retry: number;
  delayMs: number;
  /** "HTTP 503", "other side closed (ECONNRESET)", ... */
  reason: string;
}

export interface RegistryClientOptions {
  /** Where credentials come from; default none (anonymous). See `dockerConfigCredentials`. */
  credentials?: CredentialStore;
  /**
   * Registry hosts ("host[:port]") reached over plain HTTP. Loopback hosts
   * (127.0.0.0/8, ::1, localhost) always are; every other host uses HTTPS.
   */
  insecure?: readonly string[];
  /**
   * Mirrors per registry host, tried in order before it for pulls (resolve,
   * getManifest, fetch): "host[:port]" (scheme chosen like a registry's) or
   * "http(s)://host[:port]". A mirror that fails for any reason is skipped.
   * Pushes always go to the registry itself.
   */
  mirrors?: Readonly<Record<string, readonly string[]>>;
  /** Retry policy for 429, 5xx and broken connections; see DEFAULT_RETRY. */
  retry?: Partial<RetryPolicy>;
  /** Default chunk size for blob uploads; default none (monolithic PUT). */
  uploadChunkSize?: number;
  /** Largest manifest accepted; default 4 MiB (the distribution spec's limit). */
  maxManifestBytes?: number;
  /** User-Agent header; default "kiln". */
  userAgent?: string;
  /** Called before each retry (progress, logs). */
  onRetry?: (event: RetryEvent) => void;
  /** The fetch implementation; default `registryFetch` (the global one, node:http on fetch's bad ports; tests inject). */
  fetch?: typeof globalThis.fetch;
  /** Clock for token expiry; default Date.now (tests inject). */
  now?: () => number;
}

/** Creates the HTTP implementation of RegistryClient. */
export function createRegistryClient(options: RegistryClientOptions = {}): RegistryClient {
  return new HttpRegistryClient(options);
}

interface Endpoint {
  /** host[:port] requests go to (auth state is kept per endpoint host). */
  host: string;
  /** scheme://host[:port] */
  base: string;
  /** The host credentials are looked up under ("docker.io" for registry-1.docker.io). */
  credentialHost: string;
  mirror: boolean;
}

interface Call {
  /** "failed to <verb> <reference>": every error message starts with it. */
  what: string;
  reference: string;
  /** Token scopes the request needs, e.g. "repository:a/b:pull". */
  scopes: string[];
}

interface SendRequest {
  method: string;
  /** A path ("/v2/...") on the endpoint or an absolute URL (upload locations). */
  url: string | URL;
  headers?: Record<string, string>;
  /** Called for every try, so a streamed body can be sent again. */
  body?: () => Uint8Array | ReadableStream<Uint8Array> | string | undefined;
  /** Statuses returned to the caller; any other is thrown as a KilnError. */
  ok: readonly number[];
  /** false: never retry (bodies that cannot be resent mid-upload); the error is marked restartable. */
  retry?: boolean;
}

const DEFAULT_MAX_MANIFEST = 4 << 20;
const DOCKER_HUB = 'docker.io';
const DOCKER_HUB_API = 'registry-1.docker.io';

/** Errors after which the whole upload may restart from its first request. */
const restartable = new WeakSet<Error>();

export const pullScope = (path: string): string => `repository:${path}:pull`;
export const pushScope = (path: string): string => `repository:${path}:pull,push`;

/** True for hosts served over plain HTTP without configuration: 127.0.0.0/8, ::1 and localhost. */
export function isLoopbackHost(host: string): boolean {
  let h = host.toLowerCase();
  if (h.startsWith('[')) h = h.slice(1, h.indexOf(']'));
  else if (h.split(':').length === 2) h = h.split(':')[0]!;
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

export class HttpRegistryClient implements RegistryClient {
  private readonly retry: RetryPolicy;
  private readonly fetchImpl: typeof globalThis.fetch;
  private readonly now: () => number;
  private readonly auth: Authorizer;
  private readonly userAgent: string;
  private readonly maxManifestBytes: number;

  /** `authCache`: shared with the clients this one was derived from (see `withCredentials`). */
  constructor(
    private readonly options: RegistryClientOptions = {},
    authCache: AuthCache = new AuthCache(),
  ) {
    this.retry = { ...DEFAULT_RETRY, ...options.retry };
    if (this.retry.attempts < 1) this.retry.attempts = 1;
    this.fetchImpl = options.fetch ?? registryFetch;
    this.now = options.now ?? Date.now;
    this.userAgent = options.userAgent ?? 'kiln';
    this.maxManifestBytes = options.maxManifestBytes ?? DEFAULT_MAX_MANIFEST;
    this.auth = new Authorizer(options.credentials, (url, init, what, signal) => this.tokenFetch(url, init, what, signal), this.now, authCache);
  }

  withCredentials(first: CredentialStore): RegistryClient {
    return new HttpRegistryClient({ ...this.options, credentials: chainCredentials(first, this.options.credentials) }, this.auth.cache);
  }

  async credentialsKeyFor(domain: string, signal?: AbortSignal): Promise<string> {
    return credentialsKey(await this.auth.credentials(domain, signal));
  }

  // ---- pull ---------------------------------------------------------------

  async resolve(ref: Reference, signal?: AbortSignal): Promise<Descriptor> {
    const reference = formatReference(ref);
    const call: Call = { what: `failed to resolve ${reference}`, reference, scopes: [pullScope(ref.path)] };
    return this.onPullEndpoints(ref.domain, signal, (ep) => this.resolveAt(ep, ref, call, signal));
  }

  private async resolveAt(ep: Endpoint, ref: Reference, call: Call, signal?: AbortSignal): Promise<Descriptor> {
    const target = ref.digest ?? ref.tag ?? 'latest';
    let head: Response | undefined;
    try {
      head = await this.send(ep, call, { method: 'HEAD', url: `/v2/${ref.path}/manifests/${target}`, headers: { accept: MANIFEST_TYPES.join(', ') }, ok: [200] }, signal);
    } catch (err) {
      // Registries without HEAD on manifests: fall back to GET.
      const status = err instanceof KilnError ? err.details.status : undefined;
      if (!(typeof status === 'number' && [400, 405, 406, 501].includes(status))) throw err;
    }
    if (head) {
      const mediaType = baseMediaType(head.headers.get('content-type'));
      const digest = head.headers.get('docker-content-digest') ?? undefined;
      const size = Number(head.headers.get('content-length') ?? NaN);
      if (ref.digest && digest && digest !== ref.digest) {
        throw new KilnError('failed_precondition', `${call.what}: registry answered digest ${digest}`, { reference: call.reference });
      }
      const known = ref.digest ?? digest;
      if (isManifestType(mediaType) && known && Number.isSafeInteger(size) && size > 0) return { mediaType, digest: known, size };
    }
    return (await this.getManifestAt(ep, ref, undefined, call, signal)).descriptor;
  }

  async getManifest(ref: Reference, desc?: Descriptor, signal?: AbortSignal): Promise<Manifest> {
    const reference = desc ? formatReference({ ...ref, tag: undefined, digest: desc.digest }) : formatReference(ref);
    const call: Call = { what: `failed to get manifest ${reference}`, reference, scopes: [pullScope(ref.path)] };
    return this.onPullEndpoints(ref.domain, signal, (ep) => this.getManifestAt(ep, ref, desc, call, signal));
  }

  private async getManifestAt(ep: Endpoint, ref: Reference, desc: Descriptor | undefined, call: Call, signal?: AbortSignal): Promise<Manifest> {
    const target = desc?.digest ?? ref.digest ?? ref.tag ?? 'latest';
    const accept = [...new Set([...(desc ? [desc.mediaType] : []), ...MANIFEST_TYPES])].join(', ');
    const res = await this.send(ep, call, { method: 'GET', url: `/v2/${ref.path}/manifests/${target}`, headers: { accept }, ok: [200] }, signal);
    const bytes = await this.readLimited(res, call, signal);
    const expected = desc?.digest ?? ref.digest;
    const mismatch = (why: string) => new KilnError('failed_precondition', `${call.what}: ${why}`, { reference: call.reference });
    const headerDigest = res.headers.get('docker-content-digest');
    const computed = digestOf(bytes, expected ?? headerDigest ?? 'sha256:', call);
    if (expected && computed !== expected) throw mismatch(`digest mismatch: content is ${computed}, want ${expected}`);
    if (!expected && headerDigest && computed !== headerDigest) throw mismatch(`digest mismatch: content is ${computed}, registry says ${headerDigest}`);
    if (desc && desc.size !== bytes.length) throw mismatch(`size mismatch: ${bytes.length} bytes, want ${desc.size}`);
    const parsed = parseManifest(bytes, desc?.mediaType ?? res.headers.get('content-type') ?? undefined, call.what);
    return { ...parsed, descriptor: { mediaType: parsed.mediaType, digest: computed, size: bytes.length }, bytes };
  }

  fetch(ref: Reference, desc: Descriptor, signal?: AbortSignal): AsyncIterable<Uint8Array> {
    return this.fetchStream(ref, desc, signal);
  }

  private async *fetchStream(ref: Reference, desc: Descriptor, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
    const reference = formatReference({ ...ref, tag: undefined, digest: desc.digest });
    const call: Call = { what: `failed to fetch ${reference}`, reference, scopes: [pullScope(ref.path)] };
    const mismatch = (why: string) => new KilnError('failed_precondition', `${call.what}: ${why}`, { reference, digest: desc.digest });
    const hash = newHash(desc.digest, call);
    const manifest = isManifestType(desc.mediaType);
    const url = `/v2/${ref.path}/${manifest ? 'manifests' : 'blobs'}/${desc.digest}`;
    const headers: Record<string, string> = manifest ? { accept: [...new Set([desc.mediaType, ...MANIFEST_TYPES])].join(', ') } : {};
    let ep!: Endpoint;
    let res = await this.onPullEndpoints(ref.domain, signal, async (e) => {
      const r = await this.send(e, call, { method: 'GET', url, headers, ok: [200] }, signal);
      ep = e;
      return r;
    });
    const length = res.headers.get('content-length');
    if (length !== null && Number(length) !== desc.size && !res.headers.get('content-encoding')) {
      await discard(res);
      throw mismatch(`size mismatch: registry sends ${length} bytes, want ${desc.size}`);
    }
    let offset = 0;
    let pending: Uint8Array | undefined;
    let failures = 0;
    for (;;) {
      try {
        let skip = 0;
        if (offset > 0) {
          if (res.status === 206) {
            const start = /^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '')?.[1];
            if (start === undefined || Number(start) > offset) {
              await discard(res);
              throw new KilnError('unavailable', `${call.what}: registry resumed at an unexpected range "${res.headers.get('content-range')}"`, { reference });
            }
            skip = offset - Number(start);
          } else {
            skip = offset; // the registry ignored Range: skip what we have
          }
        }
        if (!res.body) throw new KilnError('unavailable', `${call.what}: empty response`, { reference });
        for await (const raw of res.body as AsyncIterable<Uint8Array>) {
          let chunk = raw;
          if (skip > 0) {
            if (chunk.length <= skip) {
              skip -= chunk.length;
              continue;
            }
            chunk = chunk.subarray(skip);
            skip = 0;
          }
          if (offset + chunk.length > desc.size) throw mismatch(`size mismatch: more than ${desc.size} bytes`);
          hash.update(chunk);
          offset += chunk.length;
          failures = 0;
          if (pending) yield pending;
          pending = chunk;
        }
        break;
      } catch (err) {
        if (signal?.aborted) throw new CanceledError(`${call.what}: canceled`, { cause: err });
        if (err instanceof KilnError || !isNetworkError(err)) throw err;
        failures++;
        if (failures >= this.retry.attempts) {
          throw new KilnError('unavailable', `${call.what}: connection lost at byte ${offset} of ${desc.size}: ${networkReason(err)}`, { reference }, { cause: err });
        }
        await this.backoff(call, failures, undefined, `${networkReason(err)} at byte ${offset}`, signal);
        const range: Record<string, string> = offset > 0 ? { range: `bytes=${offset}-` } : {};
        res = await this.send(ep, call, { method: 'GET', url, headers: { ...headers, ...range }, ok: [200, 206] }, signal);
      }
    }
    if (offset !== desc.size) throw mismatch(`size mismatch: got ${offset} bytes, want ${desc.size}`);
    const got = `${desc.digest.slice(0, desc.digest.indexOf(':'))}:${hash.digest('hex')}`;
    if (got !== desc.digest) throw mismatch(`digest mismatch: content is ${got}`);
    if (pending) yield pending;
  }

  // ---- push ---------------------------------------------------------------

  async pushBlob(
    ref: Reference,
    desc: Descriptor,
    data: () => AsyncIterable<Uint8Array>,
    signal?: AbortSignal,
    options: PushBlobOptions = {},
  ): Promise<PushBlobResult> {
    const repo = `${ref.domain}/${ref.path}`;
    const froms = (typeof options.mountFrom === 'string' ? [options.mountFrom] : [...(options.mountFrom ?? [])]).filter((r) => r && r !== ref.path);
    const call: Call = { what: `failed to push blob ${desc.digest} to ${repo}`, reference: repo, scopes: [pushScope(ref.path), ...froms.map(pullScope)] };
    newHash(desc.digest, call); // validates the algorithm
    const ep = this.originEndpoint(ref.domain);
    const head = await this.send(ep, call, { method: 'HEAD', url: `/v2/${ref.path}/blobs/${desc.digest}`, ok: [200, 404] }, signal);
    await discard(head);
    if (head.status === 200) return 'exists';
    const chunkSize = options.chunkSize ?? this.options.uploadChunkSize;
    if (chunkSize !== undefined && (!Number.isSafeInteger(chunkSize) || chunkSize < 1)) throw new InvalidArgumentError(`${call.what}: invalid chunk size ${chunkSize}`, 'chunkSize');
    for (let restart = 1; ; restart++) {
      try {
        let location: string | undefined;
        for (const [i, from] of froms.entries()) {
          const q = `mount=${encodeURIComponent(desc.digest)}&from=${encodeURIComponent(from)}`;
          const res = await this.send(ep, call, { method: 'POST', url: `/v2/${ref.path}/blobs/uploads/?${q}`, headers: { 'content-length': '0' }, ok: [201, 202] }, signal);
          await discard(res);
          if (res.status === 201) return 'mounted';
          const loc = this.location(res, call, ep.base + `/v2/${ref.path}/blobs/uploads/`);
          if (i === froms.length - 1) location = loc;
          else await this.cancelUpload(ep, call, loc, signal);
        }
        if (!location) {
          const res = await this.send(ep, call, { method: 'POST', url: `/v2/${ref.path}/blobs/uploads/`, headers: { 'content-length': '0' }, ok: [202] }, signal);
          await discard(res);
          location = this.location(res, call, ep.base + `/v2/${ref.path}/blobs/uploads/`);
        }
        if (chunkSize) await this.uploadChunked(ep, call, desc, data, location, chunkSize, signal);
        else await this.uploadMonolithic(ep, call, desc, data, location, signal);
        return 'uploaded';
      } catch (err) {
        if (!(err instanceof Error && restartable.has(err)) || restart >= this.retry.attempts) throw err;
        await this.backoff(call, restart, undefined, `upload interrupted: ${err.message}`, signal);
      }
    }
  }

  private async uploadMonolithic(ep: Endpoint, call: Call, desc: Descriptor, data: () => AsyncIterable<Uint8Array>, location: string, signal?: AbortSignal): Promise<void> {
    const url = new URL(location);
    url.searchParams.set('digest', desc.digest);
    let check: ContentCheck | undefined;
    try {
      const res = await this.send(
        ep,
        call,
        {
          method: 'PUT',
          url,
          headers: { 'content-type': 'application/octet-stream', 'content-length': String(desc.size) },
          body: () => {
            check = new ContentCheck(desc, call);
            return ReadableStream.from(check.wrap(data()));
          },
          ok: [201, 204],
          retry: false,
        },
        signal,
      );
      await discard(res);
    } catch (err) {
      throw check?.error ?? err;
    }
  }

  private async uploadChunked(
    ep: Endpoint,
    call: Call,
    desc: Descriptor,
    data: () => AsyncIterable<Uint8Array>,
    location: string,
    chunkSize: number,
    signal?: AbortSignal,
  ): Promise<void> {
    const check = new ContentCheck(desc, call);
    let url = new URL(location);
    let start = 0;
    try {
      for await (const chunk of rechunk(check.wrap(data()), chunkSize)) {
        const end = start + chunk.length - 1;
        const res = await this.send(
          ep,
          call,
          {
            method: 'PATCH',
            url,
            headers: { 'content-type': 'application/octet-stream', 'content-length': String(chunk.length), 'content-range': `${start}-${end}` },
            body: () => chunk,
            ok: [202, 204],
            retry: false,
          },
          signal,
        );
        await discard(res);
        url = new URL(this.location(res, call, url.href, url.href));
        start = end + 1;
      }
    } catch (err) {
      throw check.error ?? err;
    }
    url.searchParams.set('digest', desc.digest);
    const res = await this.send(ep, call, { method: 'PUT', url, headers: { 'content-length': '0' }, ok: [201, 204], retry: false }, signal);
    await discard(res);
  }

  private async cancelUpload(ep: Endpoint, call: Call, location: string, signal?: AbortSignal): Promise<void> {
    try {
      await discard(await this.send(ep, call, { method: 'DELETE', url: location, ok: [200, 202, 204, 404], retry: false }, signal));
    } catch (err) {
      if (signal?.aborted) throw err;
      // An abandoned upload session is purged by the registry.
    }
  }

  async pushManifest(ref: Reference, desc: Descriptor, body: Uint8Array, signal?: AbortSignal): Promise<void> {
    const reference = formatReference(ref.tag ? { ...ref, digest: undefined } : { ...ref, digest: desc.digest });
    const call: Call = { what: `failed to push ${reference}`, reference, scopes: [pushScope(ref.path)] };
    const computed = digestOf(body, desc.digest, call);
    if (computed !== desc.digest) throw new InvalidArgumentError(`${call.what}: manifest content is ${computed}, descriptor says ${desc.digest}`, 'desc');
    if (body.length !== desc.size) throw new InvalidArgumentError(`${call.what}: manifest is ${body.length} bytes, descriptor says ${desc.size}`, 'desc');
    if (ref.digest && ref.digest !== desc.digest) throw new InvalidArgumentError(`${call.what}: reference digest ${ref.digest} is not the manifest's ${desc.digest}`, 'ref');
    if (!isManifestType(desc.mediaType)) throw new InvalidArgumentError(`${call.what}: "${desc.mediaType}" is not a manifest media type`, 'desc');
    const target = ref.tag ?? desc.digest;
    const ep = this.originEndpoint(ref.domain);
    const res = await this.send(
      ep,
      call,
      { method: 'PUT', url: `/v2/${ref.path}/manifests/${target}`, headers: { 'content-type': desc.mediaType }, body: () => body, ok: [200, 201, 202, 204] },
      signal,
    );
    await discard(res);
    const stored = res.headers.get('docker-content-digest');
    if (stored && stored !== desc.digest) {
      throw new KilnError('failed_precondition', `${call.what}: registry stored it as ${stored}, want ${desc.digest}`, { reference });
    }
  }

  // ---- endpoints ----------------------------------------------------------

  private schemeFor(host: string): 'http' | 'https' {
    return isLoopbackHost(host) || this.options.insecure?.includes(host) ? 'http' : 'https';
  }

  private originEndpoint(domain: string): Endpoint {
    const host = domain === DOCKER_HUB ? DOCKER_HUB_API : domain;
    const scheme = this.options.insecure?.includes(domain) ? 'http' : this.schemeFor(host);
    return { host, base: `${scheme}://${host}`, credentialHost: domain, mirror: false };
  }

  private pullEndpoints(domain: string): Endpoint[] {
    const mirrors = (this.options.mirrors?.[domain] ?? []).map((m): Endpoint => {
      if (/^https?:\/\//i.test(m)) {
        const u = new URL(m);
        return { host: u.host, base: `${u.protocol}//${u.host}`, credentialHost: u.host, mirror: true };
      }
      const host = m.replace(/\/+$/, '');
      return { host, base: `${this.schemeFor(host)}://${host}`, credentialHost: host, mirror: true };
    });
    return [...mirrors, this.originEndpoint(domain)];
  }

  /** Runs `fn` on each mirror, then on the registry; a mirror's failure moves on, the registry's is thrown. */
  private async onPullEndpoints<T>(domain: string, signal: AbortSignal | undefined, fn: (ep: Endpoint) => Promise<T>): Promise<T> {
    const eps = this.pullEndpoints(domain);
    for (const ep of eps) {
      try {
        return await fn(ep);
      } catch (err) {
        if (!ep.mirror || signal?.aborted || (err instanceof KilnError && err.code === 'canceled')) throw err;
      }
    }
    throw new Error('unreachable');
  }

  /** The upload Location of `res`, absolute (relative ones resolve against the request's URL). */
  private location(res: Response, call: Call, requestUrl: string, fallback?: string): string {
    const loc = res.headers.get('location') ?? fallback;
    if (!loc) throw new KilnError('unavailable', `${call.what}: registry answered ${res.status} without a Location`, { reference: call.reference });
    return new URL(loc, res.url || requestUrl).href;
  }

  // ---- HTTP ---------------------------------------------------------------

  private async send(ep: Endpoint, call: Call, req: SendRequest, signal?: AbortSignal): Promise<Response> {
    const url = typeof req.url === 'string' && req.url.startsWith('/') ? new URL(ep.base + req.url) : new URL(req.url);
    const sameHost = url.host === ep.host;
    let extraScopes: string[] = [];
    let authRetried = false;
    for (let attempt = 1; ; attempt++) {
      if (signal?.aborted) throw new CanceledError(`${call.what}: canceled`);
      const headers: Record<string, string> = { 'user-agent': this.userAgent, ...req.headers };
      const auth = sameHost ? await this.auth.header(ep.host, ep.credentialHost, [...call.scopes, ...extraScopes], call.what, signal) : undefined;
      if (auth) headers.authorization = auth;
      let res: Response;
      try {
        const body = req.body?.();
        const init: RequestInit & { duplex?: 'half' } = { method: req.method, headers, body, signal, redirect: 'follow' };
        if (body instanceof ReadableStream) init.duplex = 'half';
        res = await this.fetchImpl(url, init);
      } catch (err) {
        if (signal?.aborted) throw new CanceledError(`${call.what}: canceled`, { cause: err });
        if (err instanceof KilnError) throw err;
        if (!isNetworkError(err)) throw new KilnError('internal', `${call.what}: ${networkReason(err)}`, { reference: call.reference }, { cause: err });
        if (req.retry === false || attempt >= this.retry.attempts) {
          const e = new KilnError('unavailable', `${call.what}: ${networkReason(err)}`, { reference: call.reference }, { cause: err });
          if (req.retry === false) restartable.add(e);
          throw e;
        }
        await this.backoff(call, attempt, undefined, networkReason(err), signal);
        continue;
      }
      if (req.ok.includes(res.status)) return res;
      if (res.status === 401 && sameHost && !authRetried) {
        const challenges = parseChallenges(res.headers.get('www-authenticate'));
        if (await this.auth.challenged(ep.host, ep.credentialHost, challenges, auth, [...call.scopes, ...extraScopes], signal)) {
          const scope = challenges.find((c) => c.scheme === 'bearer')?.params.scope;
          if (scope) extraScopes = scope.split(' ').filter(Boolean);
          authRetried = true;
          attempt--;
          await discard(res);
          continue;
        }
      }
      if (isRetryableStatus(res.status) && req.retry !== false && attempt < this.retry.attempts) {
        const after = parseRetryAfter(res.headers.get('retry-after'), this.now());
        await discard(res);
        await this.backoff(call, attempt, after, `HTTP ${res.status}`, signal);
        continue;
      }
      const err = await httpError(res, call);
      if (req.retry === false && isRetryableStatus(res.status)) restartable.add(err);
      throw err;
    }
  }

  private async backoff(call: Call, retry: number, retryAfterMs: number | undefined, reason: string, signal?: AbortSignal): Promise<void> {
    const delayMs = retryDelay(this.retry, retry, retryAfterMs);
    this.options.onRetry?.({ what: call.what, retry, delayMs, reason });
    try {
      await sleep(delayMs, signal);
    } catch (err) {
      throw new CanceledError(`${call.what}: canceled`, { cause: err });
    }
  }

  /** GET/POST to a token server, retried like registry requests (no auth challenges there). */
  private async tokenFetch(url: URL, init: RequestInit, what: string, signal?: AbortSignal): Promise<Response> {
    const call: Call = { what: `${what}: token server ${url.origin}${url.pathname}`, reference: url.href, scopes: [] };
    for (let attempt = 1; ; attempt++) {
      let res: Response;
      try {
        res = await this.fetchImpl(url, { ...init, headers: { 'user-agent': this.userAgent, ...(init.headers as Record<string, string>) }, signal });
      } catch (err) {
        if (signal?.aborted) throw new CanceledError(`${call.what}: canceled`, { cause: err });
        if (!isNetworkError(err) || attempt >= this.retry.attempts) throw new KilnError('unavailable', `${call.what}: ${networkReason(err)}`, {}, { cause: err });
        await this.backoff(call, attempt, undefined, networkReason(err), signal);
        continue;
      }
      if (isRetryableStatus(res.status) && attempt < this.retry.attempts) {
        const after = parseRetryAfter(res.headers.get('retry-after'), this.now());
        await discard(res);
        await this.backoff(call, attempt, after, `HTTP ${res.status}`, signal);
        continue;
      }
      return res;
    }
  }

  private async readLimited(res: Response, call: Call, signal?: AbortSignal): Promise<Uint8Array> {
    const chunks: Uint8Array[] = [];
    let total = 0;
    try {
      for await (const c of (res.body ?? []) as AsyncIterable<Uint8Array>) {
        total += c.length;
        if (total > this.maxManifestBytes) {
          throw new KilnError('failed_precondition', `${call.what}: manifest larger than ${this.maxManifestBytes} bytes`, { reference: call.reference });
        }
        chunks.push(c);
      }
    } catch (err) {
      if (signal?.aborted) throw new CanceledError(`${call.what}: canceled`, { cause: err });
      if (err instanceof KilnError) throw err;
      throw new KilnError('unavailable', `${call.what}: ${networkReason(err)}`, { reference: call.reference }, { cause: err });
    }
    return Buffer.concat(chunks, total);
  }
}

/** Checks pushed content against its descriptor as it streams; holds the last chunk back until it matches. */
class ContentCheck {
  error: KilnError | undefined;
  private readonly hash: Hash;
  constructor(
    private readonly desc: Descriptor,
    private readonly call: Call,
  ) {
    this.hash = newHash(desc.digest, call);
  }

  async *wrap(source: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
    let size = 0;
    let pending: Uint8Array | undefined;
    const fail = (why: string) => (this.error = new KilnError('failed_precondition', `${this.call.what}: ${why}`, { reference: this.call.reference, digest: this.desc.digest }));
    for await (const chunk of source) {
      if (chunk.length === 0) continue;
      size += chunk.length;
      if (size > this.desc.size) throw fail(`content is larger than the descriptor's ${this.desc.size} bytes`);
      this.hash.update(chunk);
      if (pending) yield pending;
      pending = chunk;
    }
    if (size !== this.desc.size) throw fail(`content is ${size} bytes, descriptor says ${this.desc.size}`);
    const got = `${this.desc.digest.slice(0, this.desc.digest.indexOf(':'))}:${this.hash.digest('hex')}`;
    if (got !== this.desc.digest) throw fail(`content is ${got}, descriptor says ${this.desc.digest}`);
    if (pending) yield pending;
  }
}

/** Re-cuts a stream into chunks of exactly `size` bytes (the last may be shorter). */
async function* rechunk(source: AsyncIterable<Uint8Array>, size: number): AsyncGenerator<Uint8Array> {
  let parts: Uint8Array[] = [];
  let have = 0;
  for await (let chunk of source) {
    while (chunk.length > 0) {
      const take = Math.min(size - have, chunk.length);
      parts.push(chunk.subarray(0, take));
      have += take;
      chunk = chunk.subarray(take);
      if (have === size) {
        yield Buffer.concat(parts, have);
        parts = [];
        have = 0;
      }
    }
  }
  if (have > 0) yield Buffer.concat(parts, have);
}

function newHash(digest: string, call: Call): Hash {
  const alg = digest.slice(0, Math.max(0, digest.indexOf(':')));
  if (alg !== 'sha256' && alg !== 'sha512') throw new InvalidArgumentError(`${call.what}: unsupported digest "${digest}"`, 'digest');
  return createHash(alg);
}

/** The digest of `bytes` with the algorithm of `like` (a digest; sha256 when it has no known algorithm prefix). */
function digestOf(bytes: Uint8Array, like: string, call: Call): string {
  const alg = like.slice(0, Math.max(0, like.indexOf(':'))) || 'sha256';
  return `${alg}:${newHash(`${alg}:`, call).update(bytes).digest('hex')}`;
}

async function discard(res: Response): Promise<void> {
  if (res.body && !res.bodyUsed) await res.body.cancel().catch(() => {});
}

const STATUS_CODES: Record<number, [ErrorCode, string]> = {
  401: ['unauthenticated', 'unauthorized (HTTP 401)'],
  403: ['permission_denied', 'permission denied'],
  404: ['not_found', 'not found'],
  429: ['unavailable', 'too many requests'],
};

/** The KilnError for a registry's error response, naming the reference and the registry's error code. */
async function httpError(res: Response, call: Call): Promise<KilnError> {
  let text = '';
  try {
    text = (await res.text()).slice(0, 4096);
  } catch {
    // no body
  }
  let regCode: string | undefined;
  let regMsg: string | undefined;
  try {
    const body = JSON.parse(text) as { errors?: { code?: string; message?: string }[] };
    regCode = body.errors?.[0]?.code;
    regMsg = body.errors?.[0]?.message;
  } catch {
    // not JSON
  }
  let code: ErrorCode;
  let reason: string;
  const known = STATUS_CODES[res.status];
  if (known) [code, reason] = known;
  else if (res.status >= 500) [code, reason] = ['unavailable', `registry error (HTTP ${res.status})`];
  else if (regCode === 'DIGEST_INVALID' || regCode === 'SIZE_INVALID') [code, reason] = ['failed_precondition', 'content does not match its digest'];
  else if (res.status === 409 || res.status === 412 || res.status === 416) [code, reason] = ['failed_precondition', `HTTP ${res.status}`];
  else [code, reason] = ['invalid_argument', `HTTP ${res.status}`];
  const detail = regCode || regMsg ? ` (${[regCode, regMsg].filter(Boolean).join(': ')})` : '';
  const details: Record<string, string | number> = { reference: call.reference, status: res.status };
  if (regCode) details.registryCode = regCode;
  return new KilnError(code, `${call.what}: ${reason}${detail}`, details);
}
