import { InvalidArgumentError } from '@kiln/common';
import { credsAuthenticator, nkeyAuthenticator, type ConnectionOptions } from 'nats';

/**
 * How a connection proves who it is to nats-server: one of user + password,
 * a token, an NKEY seed (`SU...`) or a credentials file's text (JWT + seed,
 * as `nsc` writes it). Values are the secrets themselves, never paths: the
 * caller reads files.
 */
export type NatsAuth = { user: string; password: string } | { token: string } | { nkeySeed: string } | { creds: string };

/**
 * TLS towards nats-server, PEM text. `ca` alone verifies the server; `cert`
 * + `key` also present a client certificate (servers with `verify: true`).
 */
export interface NatsTlsOptions {
  ca?: string;
  cert?: string;
  key?: string;
}

/** Checks `auth` and returns the secret strings that must never reach a message or log. */
export function compileNatsAuth(auth: NatsAuth | undefined): { auth: NatsAuth | undefined; secrets: string[] } {
  if (auth === undefined) return { auth, secrets: [] };
  const nonEmpty = (v: unknown, field: string): string => {
    if (typeof v !== 'string' || v === '') throw new InvalidArgumentError(`invalid NATS ${field}: must be a non-empty string`, `auth.${field}`);
    return v;
  };
  if ('user' in auth) {
    nonEmpty(auth.user, 'user');
    return { auth, secrets: [nonEmpty(auth.password, 'password')] };
  }
  if ('token' in auth) return { auth, secrets: [nonEmpty(auth.token, 'token')] };
  if ('nkeySeed' in auth) {
    const seed = nonEmpty(auth.nkeySeed, 'nkeySeed').trim();
    if (!/^SU[A-Z2-7]+$/.test(seed)) throw new InvalidArgumentError('invalid NATS nkeySeed: want a user seed (SU...)', 'auth.nkeySeed');
    return { auth: { nkeySeed: seed }, secrets: [seed] };
  }
  if ('creds' in auth) {
    const creds = nonEmpty(auth.creds, 'creds');
    if (!/-----BEGIN NATS USER JWT-----/.test(creds) || !/-----BEGIN USER NKEY SEED-----/.test(creds)) {
      throw new InvalidArgumentError('invalid NATS creds: want a credentials file with a user JWT and an NKEY seed', 'auth.creds');
    }
    const seed = /\bSU[A-Z2-7]{20,}\b/.exec(creds)?.[0];
    return { auth, secrets: seed ? [creds, seed] : [creds] };
  }
  throw new InvalidArgumentError('invalid NATS auth: give user + password, token, nkeySeed or creds', 'auth');
}

/** The nats.js connection options for `auth` and `tls`. */
export function natsConnectAuthOptions(auth: NatsAuth | undefined, tls: NatsTlsOptions | undefined): Partial<ConnectionOptions> {
  const out: Partial<ConnectionOptions> = {};
  const bytes = (s: string) => new TextEncoder().encode(s);
  if (auth && 'user' in auth) Object.assign(out, { user: auth.user, pass: auth.password });
  else if (auth && 'token' in auth) out.token = auth.token;
  else if (auth && 'nkeySeed' in auth) out.authenticator = nkeyAuthenticator(bytes(auth.nkeySeed));
  else if (auth && 'creds' in auth) out.authenticator = credsAuthenticator(bytes(auth.creds));
  if (tls) out.tls = { ...(tls.ca ? { ca: tls.ca } : {}), ...(tls.cert ? { cert: tls.cert } : {}), ...(tls.key ? { key: tls.key } : {}) };
  return out;
}

/** `nats://user:pass@host:4222` → `nats://***@host:4222`; other text unchanged. */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^@/]*@/i, '$1***@');
}

/**
 * Removes credentials from text bound for an error or a log: userinfo in
 * any URL, and every occurrence of a known secret.
 */
export function redactCredentials(text: string, secrets: readonly string[] = []): string {
  let out = text.replace(/([a-z][a-z0-9+.-]*:\/\/)[^@/\s,]*@/gi, '$1***@');
  for (const s of secrets) if (s.length >= 4) out = out.split(s).join('***');
  return out;
}
