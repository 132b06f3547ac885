import { KilnError } from '@kiln/common';
import { credentialsKey, type CredentialStore, type Credentials } from './credentials.js';

/** One parsed `WWW-Authenticate` challenge: scheme (lower case) and its parameters (keys lower case). */
export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/**
 * Parses a `WWW-Authenticate` header into its challenges, e.g.
 * `Bearer realm="https://auth/token",service="reg",scope="repository:a:pull,push"`
 * (quoted values may hold commas and escaped quotes; several challenges may
 * share the header).
 */
export function parseChallenges(header: string | null | undefined): Challenge[] {
  const out: Challenge[] = [];
  if (!header) return out;
  let i = 0;
  const s = header;
  const skipWs = () => {
    while (i < s.length && /[\s,]/.test(s[i]!)) i++;
  };
  const token = () => {
    const start = i;
    while (i < s.length && /[!#$%&'*+.^_`|~0-9A-Za-z-]/.test(s[i]!)) i++;
    return s.slice(start, i);
  };
  let current: Challenge | undefined;
  while (i < s.length) {
    skipWs();
    const start = i;
    const word = token();
    if (!word) {
      i++;
      continue;
    }
    let j = i;
    while (j < s.length && s[j] === ' ') j++;
    if (s[j] === '=' && current) {
      // auth-param
      i = j + 1;
      while (i < s.length && s[i] === ' ') i++;
      let value = '';
      if (s[i] === '"') {
        i++;
        while (i < s.length && s[i] !== '"') {
          if (s[i] === '\\' && i + 1 < s.length) i++;
          value += s[i];
          i++;
        }
        i++;
      } else {
        const vs = i;
        while (i < s.length && s[i] !== ',' && !/\s/.test(s[i]!)) i++;
        value = s.slice(vs, i);
      }
      current.params[word.toLowerCase()] = value;
    } else if (s[j] === '=' && !current) {
      i = start + word.length + 1; // stray param before any scheme
    } else {
      current = { scheme: word.toLowerCase(), params: {} };
      out.push(current);
    }
  }
  return out;
}

/**
 * Sends one token-server request (GET with query, or POST of an OAuth2 form),
 * retried like registry requests; `what` starts the messages of its errors.
 */
export type TokenFetcher = (url: URL, init: RequestInit, what: string, signal?: AbortSignal) => Promise<Response>;

interface HostAuth {
  scheme: 'basic' | 'bearer';
  realm?: string;
  service?: string;
}

interface CachedToken {
  token: string;
  expiresAt: number;
}

/**
 * What clients derived from one another (`RegistryClient.withCredentials`)
 * share: the challenge each host answered with (not secret) and bearer
 * tokens, keyed by host, service, scopes and the identity they were issued
 * to (`credentialsKey`), so a token got with one build's credentials is
 * never sent for another's.
 */
export class AuthCache {
  readonly hosts = new Map<string, HostAuth>();
  readonly tokens = new Map<string, CachedToken>();
  readonly pending = new Map<string, Promise<CachedToken>>();
}

/**
 * Per-client authentication state: credentials per host (asked once from
 * the CredentialStore) over a possibly shared AuthCache. Bearer tokens are
 * cached until shortly before they expire; concurrent requests needing the
 * same token share one token request.
 */
export class Authorizer {
  private readonly creds = new Map<string, Promise<Credentials | undefined>>();
  private readonly hosts: Map<string, HostAuth>;
  private readonly tokens: Map<string, CachedToken>;
  private readonly pending: Map<string, Promise<CachedToken>>;

  constructor(
    private readonly store: CredentialStore | undefined,
    private readonly fetchToken: TokenFetcher,
    private readonly now: () => number = Date.now,
    readonly cache: AuthCache = new AuthCache(),
  ) {
    this.hosts = cache.hosts;
    this.tokens = cache.tokens;
    this.pending = cache.pending;
  }

  credentials(credentialHost: string, signal?: AbortSignal): Promise<Credentials | undefined> {
    let c = this.creds.get(credentialHost);
    if (!c) {
      c = this.store ? this.store.get(credentialHost, signal) : Promise.resolve(undefined);
      this.creds.set(credentialHost, c);
      c.catch(() => this.creds.delete(credentialHost));
    }
    return c;
  }

  /**
   * Records a 401's challenges for `host`. Returns false when another try
   * cannot help (an unknown scheme, or basic auth without credentials or
   * with the credentials just refused).
   */
  async challenged(host: string, credentialHost: string, challenges: Challenge[], sentAuth: string | undefined, scopes: string[], signal?: AbortSignal): Promise<boolean> {
    const bearer = challenges.find((c) => c.scheme === 'bearer' && c.params.realm);
    const basic = challenges.find((c) => c.scheme === 'basic');
    if (bearer) {
      const prev = this.hosts.get(host);
      this.hosts.set(host, { scheme: 'bearer', realm: bearer.params.realm, service: bearer.params.service });
      // A refused token is dropped; the one retry gets a fresh one.
      if (sentAuth?.startsWith('Bearer ')) this.tokens.delete(this.tokenKey(host, prev?.service, scopes, await this.credentials(credentialHost, signal)));
      return true;
    }
    if (basic) {
      this.hosts.set(host, { scheme: 'basic' });
      if (sentAuth?.startsWith('Basic ')) return false;
      const c = await this.credentials(credentialHost, signal);
      return Boolean(c?.username !== undefined && c.password !== undefined);
    }
    return false;
  }

  /** The Authorization header for a request to `host` needing `scopes`; undefined until the host has challenged. */
  async header(host: string, credentialHost: string, scopes: string[], what: string, signal?: AbortSignal): Promise<string | undefined> {
    const h = this.hosts.get(host);
    if (!h) return undefined;
    const creds = await this.credentials(credentialHost, signal);
    if (h.scheme === 'basic') {
      if (creds?.username === undefined || creds.password === undefined) return undefined;
      return `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
    }
    if (creds?.registryToken) return `Bearer ${creds.registryToken}`;
    const key = this.tokenKey(host, h.service, scopes, creds);
    const cached = this.tokens.get(key);
    if (cached && cached.expiresAt > this.now()) return `Bearer ${cached.token}`;
    let p = this.pending.get(key);
    if (!p) {
      p = this.requestToken(h, creds, scopes, what, signal).finally(() => this.pending.delete(key));
      this.pending.set(key, p);
    }
    const t = await p;
    this.tokens.set(key, t);
    return `Bearer ${t.token}`;
  }

  private tokenKey(host: string, service: string | undefined, scopes: string[], creds: Credentials | undefined): string {
    return `${host}\n${service ?? ''}\n${[...new Set(scopes)].sort().join(' ')}\n${credentialsKey(creds)}`;
  }

  private async requestToken(h: HostAuth, creds: Credentials | undefined, scopes: string[], what: string, signal?: AbortSignal): Promise<CachedToken> {
    let url: URL;
    try {
      url = new URL(h.realm!);
    } catch {
      throw new KilnError('unauthenticated', `${what}: invalid token realm "${h.realm}"`);
    }
    const uniqueScopes = [...new Set(scopes)].sort();
    let res: Response;
    if (creds?.identityToken) {
      const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: creds.identityToken, client_id: 'kiln' });
      if (h.service) form.set('service', h.service);
      if (uniqueScopes.length) form.set('scope', uniqueScopes.join(' '));
      res = await this.fetchToken(url, { method: 'POST', body: form.toString(), headers: { 'content-type': 'application/x-www-form-urlencoded' } }, what, signal);
    } else {
      if (h.service) url.searchParams.set('service', h.service);
      for (const s of uniqueScopes) url.searchParams.append('scope', s);
      const headers: Record<string, string> = {};
      if (creds?.username !== undefined && creds.password !== undefined) {
        headers.authorization = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
      }
      res = await this.fetchToken(url, { method: 'GET', headers }, what, signal);
    }
    const text = await res.text().catch(() => '');
    if (res.status === 401 || res.status === 403) {
      throw new KilnError(res.status === 401 ? 'unauthenticated' : 'permission_denied', `${what}: token server ${url.origin}${url.pathname} refused the credentials (HTTP ${res.status})`, {
        status: res.status,
      });
    }
    if (!res.ok) {
      throw new KilnError(res.status >= 500 ? 'unavailable' : 'unauthenticated', `${what}: token server ${url.origin}${url.pathname} answered HTTP ${res.status}`, { status: res.status });
    }
    let body: { token?: string; access_token?: string; expires_in?: number };
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      throw new KilnError('unauthenticated', `${what}: token server answered invalid JSON`);
    }
    const token = body.token ?? body.access_token;
    if (!token) throw new KilnError('unauthenticated', `${what}: token server answered no token`);
    const lifetimeMs = (typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : 60) * 1000;
    // Counted from receipt (issued_at is the server's clock); refreshed a little
    // early: 10% of the lifetime, at most 10 s.
    return { token, expiresAt: this.now() + lifetimeMs - Math.min(10_000, lifetimeMs / 10) };
  }
}
