import { findNatsServer, startNatsServer, type NatsServer } from '@kiln/testkit';
import { KilnError } from '@kiln/common';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nkeys } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectNatsBus } from './nats/nats-bus.js';
import { compileNatsAuth, redactCredentials, redactUrl } from './nats/nats-auth.js';

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

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

  beforeAll(async () => {
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
    await Promise.all([users?.stop(), token?.stop()]);
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
});
