import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { CanceledError, KilnError } from '@kiln/common';

/**
 * Credentials for one registry host. `username` + `password` go to basic
 * auth and to the token server; `identityToken` (an OAuth2 refresh token, as
 * `docker login` stores for some registries) is exchanged at the token
 * server; `registryToken` is sent as the bearer token as it is.
 */
export interface Credentials {
  username?: string;
  password?: string;
  identityToken?: string;
  registryToken?: string;
}

/**
 * Where the client gets credentials. `host` is the registry host as written
 * in references ("docker.io", "127.0.0.1:5000", a mirror's host). Resolves
 * undefined when the store knows nothing about the host (the client then
 * goes anonymous); rejects with a KilnError when the store itself fails.
 * The caller owns the store; the client asks lazily, on the first
 * authentication challenge from a host, and remembers the answer for its
 * own lifetime.
 */
export interface CredentialStore {
  get(host: string, signal?: AbortSignal): Promise<Credentials | undefined>;
}

/** A store answering from a fixed map of host -> credentials. */
export function staticCredentials(map: Record<string, Credentials>): CredentialStore {
  return { get: async (host) => map[host] };
}

/**
 * A store asking `stores` in order: the first answer with credentials wins;
 * undefined when none has any. A failing store fails the lookup (its error
 * names the source), so a broken credential helper is never silently
 * replaced by another identity.
 */
export function chainCredentials(...stores: readonly (CredentialStore | undefined)[]): CredentialStore {
  const chain = stores.filter((s): s is CredentialStore => s !== undefined);
  return {
    async get(host, signal) {
      for (const store of chain) {
        const c = await store.get(host, signal);
        if (c) return c;
      }
      return undefined;
    },
  };
}

/**
 * Asks a build's client session for a host's credentials: the
 * `GetCredentials` answer of kiln.session.v1 (both fields empty: none).
 */
export type SessionCredentialsAsk = (host: string, signal?: AbortSignal) => Promise<{ username: string; secret: string }>;

/**
 * The credentials a build's client answers with (from the user's
 * ~/.docker/config.json and credential helpers). An empty username with a
 * secret is an identity token, as BuildKit's session auth sends it.
 */
export function sessionCredentials(ask: SessionCredentialsAsk): CredentialStore {
  return {
    async get(host, signal) {
      const { username, secret } = await ask(host, signal);
      if (!username && !secret) return undefined;
      if (!username) return { identityToken: secret };
      return { username, password: secret };
    },
  };
}

/**
 * An opaque key naming an identity: equal keys for equal credentials,
 * "anonymous" for none. Caches of what a registry answered (tokens, image
 * metadata) are keyed by it so one user's access never serves another.
 */
export function credentialsKey(c: Credentials | undefined): string {
  if (!c || (c.username === undefined && c.password === undefined && !c.identityToken && !c.registryToken)) return 'anonymous';
  const h = createHash('sha256');
  for (const v of [c.username, c.password, c.identityToken, c.registryToken]) h.update(`${v === undefined ? 0 : 1}:${v ?? ''}\0`);
  return h.digest('hex');
}

/** The key Docker uses for Docker Hub in config.json and with credential helpers. */
export const DOCKER_HUB_SERVER = 'https://index.docker.io/v1/';

export interface DockerConfigCredentialsOptions {
  /** The config file; default `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. */
  configPath?: string;
  /** PATH used to find `docker-credential-<name>` helpers; default `process.env.PATH`. */
  path?: string;
}

interface DockerConfigFile {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string; registrytoken?: string }>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
}

/**
 * Reads credentials the way the Docker CLI does: `credHelpers[host]`, then
 * `credsStore`, run as `docker-credential-<name> get` with the server on
 * stdin; else `auths[host]` (base64 `auth` "user:password", or `username` /
 * `password`, `identitytoken`, `registrytoken`). Docker Hub ("docker.io") is
 * looked up under "https://index.docker.io/v1/" too, and `auths` keys may
 * carry a scheme or path ("https://host/v1/"). The file is read on each
 * call (the client asks once per host); a missing file means no credentials.
 */
export function dockerConfigCredentials(opts: DockerConfigCredentialsOptions = {}): CredentialStore {
  const configPath = opts.configPath ?? join(process.env.DOCKER_CONFIG ?? join(homedir(), '.docker'), 'config.json');
  return {
    async get(host, signal) {
      let config: DockerConfigFile;
      try {
        config = JSON.parse(await readFile(configPath, 'utf8')) as DockerConfigFile;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw new KilnError('failed_precondition', `failed to read credentials for ${host} from ${configPath}: ${(err as Error).message}`, {}, { cause: err });
      }
      const keys = host === 'docker.io' ? [DOCKER_HUB_SERVER, 'docker.io', 'index.docker.io', 'registry-1.docker.io'] : [host];
      for (const key of keys) {
        const helper = config.credHelpers?.[key];
        if (helper) return runCredentialHelper(helper, key, opts.path, signal);
      }
      if (config.credsStore) {
        const fromStore = await runCredentialHelper(config.credsStore, keys[0]!, opts.path, signal);
        if (fromStore) return fromStore;
      }
      const auths = config.auths ?? {};
      for (const key of keys) {
        const entry = auths[key] ?? Object.entries(auths).find(([k]) => hostOfServer(k) === hostOfServer(key))?.[1];
        if (!entry) continue;
        const creds: Credentials = {};
        if (entry.auth) {
          const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
          const colon = decoded.indexOf(':');
          if (colon < 0) throw new KilnError('failed_precondition', `failed to read credentials for ${host} from ${configPath}: invalid auth field`);
          creds.username = decoded.slice(0, colon);
          creds.password = decoded.slice(colon + 1);
        }
        if (entry.username) creds.username = entry.username;
        if (entry.password) creds.password = entry.password;
        if (entry.identitytoken) creds.identityToken = entry.identitytoken;
        if (entry.registrytoken) creds.registryToken = entry.registrytoken;
        return Object.keys(creds).length ? creds : undefined;
      }
      return undefined;
    },
  };
}

function hostOfServer(server: string): string {
  return server.replace(/^[a-z]+:\/\//i, '').split('/')[0]!.toLowerCase();
}

/**
 * Runs `docker-credential-<helper> get` with `server` on stdin. Resolves
 * undefined when the helper says it has no credentials; the username
 * "<token>" marks an identity token (Docker's convention).
 */
export function runCredentialHelper(helper: string, server: string, pathEnv?: string, signal?: AbortSignal): Promise<Credentials | undefined> {
  const bin = `docker-credential-${helper}`;
  const fail = (why: string, cause?: unknown) =>
    new KilnError('unauthenticated', `failed to get credentials for ${server} from ${bin}: ${why}`, {}, cause ? { cause } : undefined);
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new CanceledError());
    const child = spawn(bin, ['get'], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: pathEnv === undefined ? process.env : { ...process.env, PATH: pathEnv },
      signal,
    });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.stdin.on('error', () => {});
    child.stdin.end(server);
    child.once('error', (e) => {
      if (signal?.aborted) reject(new CanceledError());
      else reject(fail((e as NodeJS.ErrnoException).code === 'ENOENT' ? 'helper not found on PATH' : e.message, e));
    });
    child.once('close', (code) => {
      if (code !== 0) {
        const msg = (out || err).trim();
        if (/credentials not found/i.test(msg)) return resolve(undefined);
        return reject(fail(msg || `exit code ${code}`));
      }
      try {
        const r = JSON.parse(out) as { Username?: string; Secret?: string };
        if (!r.Secret && !r.Username) return resolve(undefined);
        resolve(r.Username === '<token>' ? { identityToken: r.Secret } : { username: r.Username, password: r.Secret });
      } catch (e) {
        reject(fail('invalid JSON on stdout', e));
      }
    });
  });
}
