import { readFileSync } from 'node:fs';
import type { NatsAuth, NatsTlsOptions } from './nats/nats-auth.js';
import { InvalidArgumentError } from '@kiln/common';

/** How a tier reaches NATS: the URL(s), its credentials and TLS, compiled once. */
export interface NatsConnectOptions {
  /** Comma-separated URLs; never with credentials in them. */
  url: string;
  auth?: NatsAuth;
  tls?: NatsTlsOptions;
}

/** The `kiln daemon` flags about NATS besides `--nats URL` (each also a key of the `[nats]` config table). */
export const NATS_FLAGS = ['nats-user', 'nats-password-file', 'nats-token-file', 'nats-nkey-seed-file', 'nats-creds', 'nats-tlscacert', 'nats-tlscert', 'nats-tlskey'] as const;
type NatsFlag = (typeof NATS_FLAGS)[number];

/** Config table key of each flag (`nats-user` -> `user`), so `[nats] user = "solver"`. */
const TABLE_KEYS: Record<string, NatsFlag | 'url'> = Object.fromEntries([['url', 'url'], ...NATS_FLAGS.map((f) => [f.slice('nats-'.length), f])]);

/**
 * Compiles the NATS connection from flags over the config file's `nats`
 * (a URL string, or a `[nats]` table with `url`, `user`, `password-file`,
 * `token-file`, `nkey-seed-file`, `creds`, `tlscacert`, `tlscert`,
 * `tlskey`). Secrets come from files or the environment
 * (KILN_NATS_PASSWORD, KILN_NATS_TOKEN), never from the command line, where
 * every local user sees them. Errors name the flag and never the secret.
 */
export function compileNatsOptions(flags: ReadonlyMap<string, string>, raw: unknown, env: NodeJS.ProcessEnv): NatsConnectOptions | undefined {
  const table = compileTable(raw);
  const pick = (flag: NatsFlag | 'nats'): { value: string; field: string } | undefined => {
    const fromFlag = flags.get(flag);
    if (fromFlag !== undefined) return { value: fromFlag, field: `--${flag}` };
    const key = flag === 'nats' ? 'url' : flag.slice('nats-'.length);
    const fromFile = table[key];
    return fromFile === undefined ? undefined : { value: fromFile, field: `nats.${key}` };
  };
  const url = pick('nats');
  const given = NATS_FLAGS.map(pick).find((p) => p !== undefined);
  if (!url) {
    if (given) throw new InvalidArgumentError(`${given.field} needs --nats URL`, given.field);
    return undefined;
  }
  for (const u of url.value.split(',')) {
    if (/^[a-z][a-z0-9+.-]*:\/\/[^/]*@/i.test(u.trim())) {
      throw new InvalidArgumentError(
        `${url.field} must not carry credentials (the command line is visible to every local user): use --nats-user with --nats-password-file or KILN_NATS_PASSWORD`,
        url.field,
      );
    }
  }
  const out: NatsConnectOptions = { url: url.value };
  const auth = compileAuth(pick, env);
  if (auth) out.auth = auth;
  const tls = compileTls(pick);
  if (tls) out.tls = tls;
  return out;
}

function compileTable(raw: unknown): Record<string, string> {
  if (raw === undefined) return {};
  if (typeof raw === 'string') return { url: raw };
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new InvalidArgumentError('nats must be a URL or a table', 'nats');
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw)) {
    if (!(k in TABLE_KEYS)) throw new InvalidArgumentError(`unknown key nats.${k} (one of ${Object.keys(TABLE_KEYS).join(', ')}; passwords and tokens go in files)`, `nats.${k}`);
    if (typeof v !== 'string' || v === '') throw new InvalidArgumentError(`nats.${k} must be a non-empty string`, `nats.${k}`);
    out[k] = v;
  }
  return out;
}

type Pick = (flag: NatsFlag) => { value: string; field: string } | undefined;

function compileAuth(pick: Pick, env: NodeJS.ProcessEnv): NatsAuth | undefined {
  const user = pick('nats-user');
  const passwordFile = pick('nats-password-file');
  const tokenFile = pick('nats-token-file');
  const password = passwordFile ? readSecret(passwordFile) : env.KILN_NATS_PASSWORD ? { value: env.KILN_NATS_PASSWORD, field: 'KILN_NATS_PASSWORD' } : undefined;
  const token = tokenFile ? readSecret(tokenFile) : env.KILN_NATS_TOKEN ? { value: env.KILN_NATS_TOKEN, field: 'KILN_NATS_TOKEN' } : undefined;
  const nkey = pick('nats-nkey-seed-file');
  const creds = pick('nats-creds');
  const kinds = [user && '--nats-user', token?.field, nkey?.field, creds?.field].filter((k): k is string => Boolean(k));
  if (kinds.length > 1) throw new InvalidArgumentError(`give one kind of NATS credentials, not ${kinds.join(' and ')}`, kinds[1]!);
  if (user) {
    if (!password) throw new InvalidArgumentError(`${user.field} needs a password: --nats-password-file FILE or KILN_NATS_PASSWORD`, user.field);
    return { user: user.value, password: password.value };
  }
  if (passwordFile) throw new InvalidArgumentError(`${passwordFile.field} needs --nats-user`, passwordFile.field);
  if (token) return { token: token.value };
  if (nkey) {
    const seed = readSecret(nkey).value;
    if (!/^SU[A-Z2-7]+$/.test(seed)) throw new InvalidArgumentError(`${nkey.field}: ${nkey.value} does not hold an NKEY user seed (SU...)`, nkey.field);
    return { nkeySeed: seed };
  }
  if (creds) {
    const text = readFile(creds);
    if (!text.includes('-----BEGIN NATS USER JWT-----')) throw new InvalidArgumentError(`${creds.field}: ${creds.value} is not a NATS credentials file (no user JWT)`, creds.field);
    return { creds: text };
  }
  return undefined;
}

function compileTls(pick: Pick): NatsTlsOptions | undefined {
  const ca = pick('nats-tlscacert');
  const cert = pick('nats-tlscert');
  const key = pick('nats-tlskey');
  if (Boolean(cert) !== Boolean(key)) {
    const missing = cert ? '--nats-tlskey' : '--nats-tlscert';
    throw new InvalidArgumentError(`${(cert ?? key)!.field} needs ${missing} too`, missing);
  }
  if (!ca && !cert) return undefined;
  const tls: NatsTlsOptions = {};
  if (ca) tls.ca = pem(ca, 'CERTIFICATE');
  if (cert && key) {
    tls.cert = pem(cert, 'CERTIFICATE');
    tls.key = pem(key, 'PRIVATE KEY');
  }
  return tls;
}

function readFile(p: { value: string; field: string }): string {
  try {
    return readFileSync(p.value, 'utf8');
  } catch (err) {
    throw new InvalidArgumentError(`cannot read ${p.field} ${p.value}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, p.field);
  }
}

/** A secret file's content without its trailing newline; an empty file is an error. */
function readSecret(p: { value: string; field: string }): { value: string; field: string } {
  const value = readFile(p).replace(/\r?\n$/, '');
  if (value === '') throw new InvalidArgumentError(`${p.field} ${p.value} is empty`, p.field);
  return { value, field: p.field };
}

function pem(p: { value: string; field: string }, kind: string): string {
  const text = readFile(p);
  if (!new RegExp(`-----BEGIN [A-Z ]*${kind}-----`).test(text)) throw new InvalidArgumentError(`${p.field} ${p.value} is not a PEM ${kind.toLowerCase()}`, p.field);
  return text;
}
