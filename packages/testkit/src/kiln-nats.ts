import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from './kilnd.js';
import { makeNatsCerts, type NatsCerts } from './nats-certs.js';
import { startNatsServer, type NatsServer } from './nats.js';

/** The NATS users of deploy/nats/nats-server.conf, one per tier kind. */
export const KILN_NATS_USERS = ['solver', 'frontend', 'exporters', 'content', 'worker'] as const;
export type KilnNatsUser = (typeof KILN_NATS_USERS)[number];

/** A nats-server run as deploy/ ships it: TLS with client certificates, per-tier users and subject permissions. */
export interface KilnNats extends NatsServer {
  /** The CA, server and client certificate files. */
  readonly certs: NatsCerts;
  /**
   * The password of `user` (random per server). nats-server parses a `$VAR`'s
   * value as a config value, so passwords are a letter then hex digits (one
   * starting with a digit would be read as a number).
   */
  password(user: KilnNatsUser): string;
  /** The file holding `user`'s password, for `--nats-password-file`. */
  passwordFile(user: KilnNatsUser): string;
  /** `kiln daemon` flags that log `tier` in as its user, over TLS with the client certificate. */
  tierArgs(tier: string): string[];
  /**
   * An outage: stops the server (its clients see their connections drop),
   * waits `ms`, and starts it again on the same port with the same
   * configuration, certificates, passwords and JetStream store (clients
   * reconnect; streams keep what they stored).
   */
  outage(ms: number): Promise<void>;
}

/** The NATS user a tier logs in as: both worker backends are `worker`. */
export function natsUserOf(tier: string): KilnNatsUser {
  const user = tier.startsWith('worker') ? 'worker' : tier;
  if (!(KILN_NATS_USERS as readonly string[]).includes(user)) throw new Error(`no NATS user for tier "${tier}"`);
  return user as KilnNatsUser;
}

/**
 * Starts nats-server with deploy/nats/nats-server.conf (the file operators
 * get), a fresh CA and certificates (openssl), and a random password per
 * tier user. `stop()` also removes the certificates and password files.
 */
export async function startKilnNats(): Promise<KilnNats> {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-nats-auth-'));
  try {
    const certs = await makeNatsCerts(dir);
    const passwords = Object.fromEntries(KILN_NATS_USERS.map((u) => [u, `k${randomBytes(24).toString('hex')}`])) as Record<KilnNatsUser, string>;
    const env: Record<string, string> = { KILN_NATS_TLS_CA: certs.ca, KILN_NATS_TLS_CERT: certs.serverCert, KILN_NATS_TLS_KEY: certs.serverKey };
    for (const u of KILN_NATS_USERS) {
      env[`KILN_NATS_${u.toUpperCase()}_PASSWORD`] = passwords[u];
      writeFileSync(join(dir, `${u}.password`), `${passwords[u]}\n`, { mode: 0o600 });
    }
    // JetStream stores build events (the solver's stream KILN_EVENTS) in the temp root, kept across outage().
    const storeDir = join(dir, 'jetstream');
    mkdirSync(storeDir);
    const config = { jetstream: true, storeDir, configFile: join(repoRoot(), 'deploy', 'nats', 'nats-server.conf'), env };
    let server = await startNatsServer(config);
    const stop = async () => {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    };
    return {
      url: server.url,
      port: server.port,
      storeDir: server.storeDir,
      logs: () => server.logs(),
      outage: async (ms) => {
        await server.stop();
        await new Promise((r) => setTimeout(r, ms));
        server = await startNatsServer({ ...config, port: server.port });
      },
      certs,
      password: (u) => passwords[u],
      passwordFile: (u) => join(dir, `${u}.password`),
      tierArgs: (tier) => {
        const user = natsUserOf(tier);
        return ['--nats-user', user, '--nats-password-file', join(dir, `${user}.password`), '--nats-tlscacert', certs.ca, '--nats-tlscert', certs.clientCert, '--nats-tlskey', certs.clientKey];
      },
      stop,
      [Symbol.asyncDispose]: stop,
    };
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
