import { findNatsServer, makeNatsCerts, startNatsServer, type NatsServer } from '@kiln/testkit';
import { KilnError } from '@kiln/common';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nkeys } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectNatsBus } from './nats/nats-bus.js';
import { compileNatsAuth, redactCredentials, redactUrl } from './nats/nats-auth.js';

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

/**
 * A decentralized-auth setup as `nsc` makes it, signed here with nats.js's
 * nkeys: the server config (operator JWT, the account preloaded) and a
 * user's credentials file. `creds(otherAccount)` signs a user with an
 * account the server does not know.
 */
function operatorSetup(): { serverConfig: string; creds: (unknownAccount?: boolean) => string } {
  const b64 = (v: string | Uint8Array) => Buffer.from(v).toString('base64url');
  const jwt = (signer: ReturnType<typeof nkeys.createAccount>, claims: object) => {
    const head = b64(JSON.stringify({ typ: 'JWT', alg: 'ed25519-nkey' }));
    const body = b64(JSON.stringify({ jti: b64(crypto.getRandomValues(new Uint8Array(16))), iat: Math.floor(Date.now() / 1000), iss: signer.getPublicKey(), ...claims }));
    return `${head}.${body}.${b64(signer.sign(enc(`${head}.${body}`)))}`;
  };
  const operator = nkeys.createOperator();
  const account = nkeys.createAccount();
  const limits = { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 };
  const accountJwt = jwt(operator, { name: 'kiln', sub: account.getPublicKey(), nats: { limits, type: 'account', version: 2 } });
  const operatorJwt = jwt(operator, { name: 'op', sub: operator.getPublicKey(), nats: { type: 'operator', version: 2 } });
  return {
    serverConfig: `operator: ${operatorJwt}\nresolver: MEMORY\nresolver_preload: { ${account.getPublicKey()}: ${accountJwt} }\n`,
    creds: (unknownAccount = false) => {
      const user = nkeys.createUser();
      const userJwt = jwt(unknownAccount ? nkeys.createAccount() : account, { name: 'u', sub: user.getPublicKey(), nats: { pub: {}, sub: {}, subs: -1, data: -1, payload: -1, type: 'user', version: 2 } });
      return `-----BEGIN NATS USER JWT-----\n${userJwt}\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n${dec(user.getSeed())}\n------END USER NKEY SEED------\n`;
    },
  };
}

describe('NATS credentials', () => {
  it('redacts userinfo in URLs and known secrets', () => {
    expect(redactUrl('nats://kiln:hunter22@10.0.0.1:4222')).toBe('nats://***@10.0.0.1:4222');
    expect(redactUrl('nats://10.0.0.1:4222')).toBe('nats://10.0.0.1:4222');
    expect(redactCredentials('failed at tls://u:p@a:1,nats://b:2 with hunter22', ['hunter22'])).toBe('failed at tls://***@a:1,nats://b:2 with ***');
  });

  it('checks each kind of credentials and lists its secrets', () => {
    expect(compileNatsAuth({ user: 'solver', password: 'pw-1234' }).secrets).toEqual(['pw-1234']);
    expect(compileNatsAuth({ token: 'tok-1234' }).secrets).toEqual(['tok-1234']);
    const seed = dec(nkeys.createUser().getSeed());
    expect(compileNatsAuth({ nkeySeed: `${seed}\n` })).toEqual({ auth: { nkeySeed: seed }, secrets: [seed] });
    expect(() => compileNatsAuth({ user: 'solver', password: '' })).toThrow(/password/);
    expect(() => compileNatsAuth({ nkeySeed: 'UABC' })).toThrow(/SU\.\.\./);
    expect(() => compileNatsAuth({ creds: 'not a creds file' })).toThrow(/credentials file/);
    const creds = `-----BEGIN NATS USER JWT-----\neyJ0eXAi.x.y\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n${seed}\n------END USER NKEY SEED------\n`;
    expect(compileNatsAuth({ creds }).secrets).toEqual([creds, seed]);
  });
});

describe.skipIf(!findNatsServer())('NATS bus with auth (needs nats-server; skipped when it is not installed)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-nats-auth-'));
  const user = nkeys.createUser();
  const seed = dec(user.getSeed());
  let users: NatsServer;
  let token: NatsServer;
  let tls: NatsServer;
  let operator: NatsServer;
  const decentralized = operatorSetup();
  let pem: (name: 'ca' | 'clientCert' | 'clientKey') => string;

  beforeAll(async () => {
    const certs = await makeNatsCerts(dir);
    pem = (name) => readFileSync(certs[name], 'utf8');
    writeFileSync(
      join(dir, 'tls.conf'),
      `tls { cert_file: "${certs.serverCert}", key_file: "${certs.serverKey}", ca_file: "${certs.ca}", verify: true }\nauthorization { users: [ { user: alice, password: $ALICE_PASSWORD } ] }\n`,
    );
    writeFileSync(join(dir, 'operator.conf'), decentralized.serverConfig);
    operator = await startNatsServer({ jetstream: false, configFile: join(dir, 'operator.conf') });
    tls = await startNatsServer({ jetstream: false, configFile: join(dir, 'tls.conf'), env: { ALICE_PASSWORD: 'alice-s3cret' } });
    writeFileSync(
      join(dir, 'users.conf'),
      `authorization {\n  users: [\n    { user: alice, password: $ALICE_PASSWORD }\n    { nkey: ${user.getPublicKey()} }\n  ]\n}\n`,
    );
    writeFileSync(join(dir, 'token.conf'), 'authorization { token: $KILN_TOKEN }\n');
    [users, token] = await Promise.all([
      startNatsServer({ jetstream: false, configFile: join(dir, 'users.conf'), env: { ALICE_PASSWORD: 'alice-s3cret' } }),
      startNatsServer({ jetstream: false, configFile: join(dir, 'token.conf'), env: { KILN_TOKEN: 't0ken-s3cret' } }),
    ]);
  });

  afterAll(async () => {
    await Promise.all([users?.stop(), token?.stop(), tls?.stop(), operator?.stop()]);
    rmSync(dir, { recursive: true, force: true });
  });

  const roundTrip = async (bus: Awaited<ReturnType<typeof connectNatsBus>>) => {
    const sub = bus.subscribe('x.auth');
    await bus.publish('x.auth', enc('hello'));
    for await (const m of sub) return dec(m.data);
    return '';
  };

  it('connects with user + password, token and NKEY', async () => {
    for (const [server, auth] of [
      [users, { user: 'alice', password: 'alice-s3cret' }],
      [token, { token: 't0ken-s3cret' }],
      [users, { nkeySeed: seed }],
    ] as const) {
      const bus = await connectNatsBus({ servers: server.url, auth, connectTimeoutMs: 2000 });
      expect(await roundTrip(bus)).toBe('hello');
      await bus.close();
    }
  });

  it('is refused without credentials or with wrong ones, and never names the secret', async () => {
    const attempts = [
      { servers: users.url },
      { servers: users.url, auth: { user: 'alice', password: 'wrong-password' } },
      { servers: `nats://alice:wrong-password@127.0.0.1:${users.port}` },
      { servers: token.url, auth: { token: 'wrong-token' } },
      { servers: users.url, auth: { nkeySeed: dec(nkeys.createUser().getSeed()) } },
    ];
    for (const opts of attempts) {
      const err = await connectNatsBus({ ...opts, connectTimeoutMs: 2000 }).then(
        async (bus) => {
          await bus.close();
          return undefined;
        },
        (e: unknown) => e,
      );
      expect(err, JSON.stringify(opts.servers)).toBeInstanceOf(KilnError);
      const text = `${(err as KilnError).message} ${JSON.stringify((err as KilnError).details)}`;
      expect(text).toMatch(/failed to connect to NATS.*[Aa]uthorization/);
      expect(text).not.toMatch(/wrong-password|wrong-token|SU[A-Z2-7]{10}/);
    }
  });

  it('talks TLS with a client certificate to a server that verifies it; refuses without one or without trusting the CA', async () => {
    const auth = { user: 'alice', password: 'alice-s3cret' };
    const bus = await connectNatsBus({ servers: tls.url, auth, tls: { ca: pem('ca'), cert: pem('clientCert'), key: pem('clientKey') }, connectTimeoutMs: 2000 });
    expect(await roundTrip(bus)).toBe('hello');
    await bus.close();
    await expect(connectNatsBus({ servers: tls.url, auth, tls: { ca: pem('ca') }, connectTimeoutMs: 2000 })).rejects.toMatchObject({ code: 'unavailable' });
    await expect(connectNatsBus({ servers: tls.url, auth, connectTimeoutMs: 2000 })).rejects.toMatchObject({ code: 'unavailable' });
    await expect(connectNatsBus({ servers: tls.url, auth, tls: { cert: pem('clientCert') } })).rejects.toMatchObject({ code: 'invalid_argument' });
  });

  it('logs in with a credentials file (user JWT + seed); one signed by an unknown account is refused', async () => {
    const bus = await connectNatsBus({ servers: operator.url, auth: { creds: decentralized.creds() }, connectTimeoutMs: 2000 });
    expect(await roundTrip(bus)).toBe('hello');
    await bus.close();
    const stranger = decentralized.creds(true);
    const err = await connectNatsBus({ servers: operator.url, auth: { creds: stranger }, connectTimeoutMs: 2000 }).catch((e: Error) => e);
    expect(err).toMatchObject({ code: 'unavailable', message: expect.stringMatching(/Authorization Violation.*credentials file/i) });
    expect((err as Error).message).not.toMatch(/SU[A-Z2-7]{10}/);
  });
});
