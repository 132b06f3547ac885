import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseChallenges } from './auth.js';
import { chainCredentials, credentialsKey, dockerConfigCredentials, sessionCredentials, staticCredentials } from './credentials.js';
import { isLoopbackHost } from './client.js';
import { parseManifest } from './media.js';
import { parseRetryAfter, retryDelay, DEFAULT_RETRY } from './retry.js';

describe('parseChallenges', () => {
  it('parses a bearer challenge with commas inside quoted values', () => {
    expect(parseChallenges('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"')).toEqual([
      { scheme: 'bearer', params: { realm: 'https://auth.example/token', service: 'registry.example', scope: 'repository:a/b:pull,push' } },
    ]);
  });

  it('parses several challenges, unquoted values and escapes', () => {
    expect(parseChallenges('Basic realm="kiln \\"test\\"", Bearer realm=https://t/x, error="insufficient_scope"')).toEqual([
      { scheme: 'basic', params: { realm: 'kiln "test"' } },
      { scheme: 'bearer', params: { realm: 'https://t/x', error: 'insufficient_scope' } },
    ]);
    expect(parseChallenges(undefined)).toEqual([]);
  });
});

describe('small helpers', () => {
  it('knows loopback hosts', () => {
    for (const h of ['127.0.0.1:5000', '127.1.2.3', 'localhost', 'localhost:80', '[::1]:5000', '::1']) expect(isLoopbackHost(h), h).toBe(true);
    for (const h of ['10.0.0.1:5000', 'registry.local', 'docker.io', '128.0.0.1']) expect(isLoopbackHost(h), h).toBe(false);
  });

  it('parses Retry-After and caps it', () => {
    expect(parseRetryAfter('2')).toBe(2000);
    expect(parseRetryAfter(new Date(Date.UTC(2030, 0, 1, 0, 0, 10)).toUTCString(), Date.UTC(2030, 0, 1))).toBe(10_000);
    expect(parseRetryAfter('soon')).toBeUndefined();
    expect(retryDelay(DEFAULT_RETRY, 1, 120_000)).toBe(DEFAULT_RETRY.maxRetryAfterMs);
    const d = retryDelay(DEFAULT_RETRY, 20);
    expect(d).toBeLessThanOrEqual(DEFAULT_RETRY.maxDelayMs);
    expect(d).toBeGreaterThanOrEqual(DEFAULT_RETRY.maxDelayMs / 2);
  });

  it('detects manifest kinds from media type, mediaType field or shape, and rejects schema 1', () => {
    const enc = (o: unknown) => Buffer.from(JSON.stringify(o));
    expect(parseManifest(enc({ schemaVersion: 2, manifests: [] }), 'application/json').kind).toBe('index');
    expect(parseManifest(enc({ schemaVersion: 2, config: {}, layers: [] })).mediaType).toBe('application/vnd.oci.image.manifest.v1+json');
    expect(parseManifest(enc({ schemaVersion: 2, mediaType: 'application/vnd.docker.distribution.manifest.list.v2+json', manifests: [] })).mediaType).toBe(
      'application/vnd.docker.distribution.manifest.list.v2+json',
    );
    expect(() => parseManifest(enc({ schemaVersion: 1, fsLayers: [] }), undefined, 'failed to resolve x')).toThrow('failed to resolve x: Docker schema 1 manifests are not supported');
  });
});

describe('dockerConfigCredentials', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-creds-'));
    // A credential helper: knows helper.example and hub (as Docker's server URL), says "not found" otherwise.
    await writeFile(
      join(dir, 'docker-credential-kilntest'),
      `#!/bin/sh
read server
case "$server" in
  helper.example) echo '{"ServerURL":"helper.example","Username":"hu","Secret":"hs"}' ;;
  https://index.docker.io/v1/) echo '{"ServerURL":"hub","Username":"<token>","Secret":"refresh"}' ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
`,
    );
    await chmod(join(dir, 'docker-credential-kilntest'), 0o755);
    await writeFile(join(dir, 'docker-credential-broken'), '#!/bin/sh\necho boom >&2\nexit 3\n');
    await chmod(join(dir, 'docker-credential-broken'), 0o755);
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  const withConfig = async (config: unknown) => {
    const configPath = join(dir, `config-${Math.random()}.json`);
    await writeFile(configPath, JSON.stringify(config));
    return dockerConfigCredentials({ configPath, path: `${dir}:/usr/bin:/bin` });
  };

  it('reads auths: base64 auth, username/password, keys with a scheme', async () => {
    const store = await withConfig({
      auths: {
        'a.example': { auth: Buffer.from('alice:pa:ss').toString('base64') },
        'b.example:5000': { username: 'bob', password: 'pw' },
        'https://c.example/v1/': { auth: Buffer.from('carol:x').toString('base64') },
        'https://index.docker.io/v1/': { auth: Buffer.from('hubuser:hubpw').toString('base64') },
      },
    });
    expect(await store.get('a.example')).toEqual({ username: 'alice', password: 'pa:ss' });
    expect(await store.get('b.example:5000')).toEqual({ username: 'bob', password: 'pw' });
    expect(await store.get('c.example')).toEqual({ username: 'carol', password: 'x' });
    expect(await store.get('docker.io')).toEqual({ username: 'hubuser', password: 'hubpw' });
    expect(await store.get('unknown.example')).toBeUndefined();
  });

  it('asks credHelpers, then credsStore, through docker-credential-<name> get', async () => {
    const store = await withConfig({
      credHelpers: { 'helper.example': 'kilntest', 'broken.example': 'broken' },
      credsStore: 'kilntest',
      auths: { 'file.example': { username: 'f', password: 'p' } },
    });
    expect(await store.get('helper.example')).toEqual({ username: 'hu', password: 'hs' });
    expect(await store.get('docker.io')).toEqual({ identityToken: 'refresh' });
    // The store has nothing for it: falls back to the file.
    expect(await store.get('file.example')).toEqual({ username: 'f', password: 'p' });
    await expect(store.get('broken.example')).rejects.toMatchObject({ code: 'unauthenticated', message: expect.stringMatching(/docker-credential-broken: boom/) });
  });

  it('treats a missing config file as no credentials', async () => {
    const store = dockerConfigCredentials({ configPath: join(dir, 'nope.json') });
    expect(await store.get('a.example')).toBeUndefined();
  });
});

describe('session credentials', () => {
  it('maps the session answer: none, user + password, identity token', async () => {
    const answers: Record<string, { username: string; secret: string }> = {
      none: { username: '', secret: '' },
      basic: { username: 'kiln', secret: 'pw' },
      token: { username: '', secret: 'refresh' },
    };
    const store = sessionCredentials(async (host) => answers[host]!);
    expect(await store.get('none')).toBeUndefined();
    expect(await store.get('basic')).toEqual({ username: 'kiln', password: 'pw' });
    expect(await store.get('token')).toEqual({ identityToken: 'refresh' });
  });

  it('chains stores: the first with credentials wins, a failing store fails the lookup', async () => {
    const first = staticCredentials({ a: { username: 'one', password: '1' } });
    const second = staticCredentials({ a: { username: 'two', password: '2' }, b: { username: 'two', password: '2' } });
    const chain = chainCredentials(first, undefined, second);
    expect(await chain.get('a')).toEqual({ username: 'one', password: '1' });
    expect(await chain.get('b')).toEqual({ username: 'two', password: '2' });
    expect(await chain.get('c')).toBeUndefined();
    const broken = chainCredentials({ get: async () => Promise.reject(new Error('helper crashed')) }, second);
    await expect(broken.get('b')).rejects.toThrow('helper crashed');
  });

  it('keys identities without revealing them', () => {
    expect(credentialsKey(undefined)).toBe('anonymous');
    expect(credentialsKey({})).toBe('anonymous');
    const k = credentialsKey({ username: 'kiln', password: 'pw' });
    expect(k).toMatch(/^[0-9a-f]{64}$/);
    expect(k).not.toContain('pw');
    expect(credentialsKey({ username: 'kiln', password: 'pw' })).toBe(k);
    expect(credentialsKey({ username: 'kiln', password: 'pw2' })).not.toBe(k);
    expect(credentialsKey({ identityToken: 'pw' })).not.toBe(credentialsKey({ registryToken: 'pw' }));
  });
});
