// Registry credentials from the client session and cross-repository mounts,
// against Debian's docker-registry behind htpasswd basic auth. The daemon's
// own docker config is empty: only the CLI's ~/.docker/config.json (a temp
// HOME) holds the credentials. A loopback proxy in front of the registry
// records every request, to see mounts instead of uploads.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findRegistry, pushBusyboxImage, runKiln, startKilnd, startRegistry, type Kilnd, type TestRegistry, e2eWorker } from '@kiln/testkit';

const BUSYBOX = '/bin/busybox';
const USER = 'kiln-e2e';
const PASSWORD = 'pw-5f1c0b';
const basicAuth = `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}`;
const has = (bin: string) => spawnSync('sh', ['-c', `command -v ${bin}`]).status === 0;

/** A loopback HTTP proxy to `target` that records "METHOD URL STATUS" of every request. */
async function recordingProxy(target: URL): Promise<{ host: string; log: string[]; close(): Promise<void> }> {
  const log: string[] = [];
  const server: Server = createServer((req, res) => {
    const upstream = httpRequest(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: { ...req.headers, host: target.host } },
      (up) => {
        log.push(`${req.method} ${req.url} ${up.statusCode}`);
        const headers = { ...up.headers };
        // Upload locations point at the registry; keep clients on the proxy.
        if (typeof headers.location === 'string') headers.location = headers.location.replace(target.origin, '');
        res.writeHead(up.statusCode ?? 502, headers);
        up.pipe(res);
      },
    );
    upstream.on('error', (err) => {
      log.push(`${req.method} ${req.url} error ${err.message}`);
      res.destroy();
    });
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    host: `127.0.0.1:${port}`,
    log,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const canRun = process.getuid?.() === 0 && !!findRegistry() && existsSync(BUSYBOX) && has('runc') && has('skopeo');

describe.skipIf(!canRun)(`registry credentials from the client session [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let registry: TestRegistry;
  let proxy: Awaited<ReturnType<typeof recordingProxy>>;
  let daemon: Kilnd;
  let work: string;
  let withCreds: string;
  let withoutCreds: string;
  let baseLayer: string;
  let baseRef: string;

  const homeWith = (dir: string, config: unknown) => {
    mkdirSync(join(dir, '.docker'), { recursive: true });
    writeFileSync(join(dir, '.docker', 'config.json'), JSON.stringify(config));
    return dir;
  };
  const kiln = (home: string, args: string[]) =>
    runKiln(['build', '--addr', daemon.addr, '--progress=plain', ...args], { env: { HOME: home, DOCKER_CONFIG: undefined }, timeoutMs: 120_000 });

  beforeAll(async () => {
    registry = await startRegistry({ htpasswd: { user: USER, password: PASSWORD } });
    proxy = await recordingProxy(new URL(registry.url));
    work = mkdtempSync(join(tmpdir(), 'kiln-registry-auth-e2e-'));
    baseLayer = (await pushBusyboxImage(registry, work, 'a/base', '1', { authorization: basicAuth })).layer.digest;
    baseRef = `${proxy.host}/a/base:1`;
    // The daemon's own docker config is an empty directory: no credentials there.
    const daemonConfig = join(work, 'daemon-docker');
    mkdirSync(daemonConfig);
    daemon = await startKilnd({ env: { DOCKER_CONFIG: daemonConfig } });
    withCreds = homeWith(join(work, 'home-with'), { auths: { [proxy.host]: { auth: Buffer.from(`${USER}:${PASSWORD}`).toString('base64') } } });
    withoutCreds = homeWith(join(work, 'home-without'), { auths: {} });
    mkdirSync(join(work, 'ctx'));
    writeFileSync(join(work, 'ctx', 'Dockerfile'), `FROM ${baseRef}\nRUN echo built with session credentials > /built.txt\nCMD ["/bin/cat", "/built.txt"]\n`);
    mkdirSync(join(work, 'scratch-ctx'));
    writeFileSync(join(work, 'scratch-ctx', 'f.txt'), 'scratch\n');
    writeFileSync(join(work, 'scratch-ctx', 'Dockerfile'), 'FROM scratch\nCOPY f.txt /f.txt\n');
  }, 60_000);

  afterAll(async () => {
    await daemon?.stop();
    await proxy?.close();
    await registry?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('fails to pull from the protected registry without the client credentials, naming the reference', async () => {
    const res = await kiln(withoutCreds, [join(work, 'ctx')]);
    expect(res.code, res.stderr).toBe(1);
    expect(res.stderr).toContain(`${proxy.host}/a/base:1`);
    expect(res.stderr).toMatch(/unauthorized \(HTTP 401\)/);
  });

  it('fails to push to the protected registry without the client credentials, naming the repository', async () => {
    const res = await kiln(withoutCreds, ['--push', '-t', `${proxy.host}/b/nocreds:1`, join(work, 'scratch-ctx')]);
    expect(res.code, res.stderr).toBe(1);
    expect(res.stderr).toContain(`${proxy.host}/b/nocreds`);
    expect(res.stderr).toMatch(/unauthorized \(HTTP 401\)/);
  });

  it('pulls FROM and pushes with the credentials of the CLI, mounting the base layer from its repository', async () => {
    proxy.log.length = 0;
    const target = `${proxy.host}/b/app:1`;
    // --provenance=false: the uploads are the image's own (the default provenance adds its statement and manifest).
    const res = await kiln(withCreds, ['--push', '--provenance=false', '-t', target, join(work, 'ctx')]);
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);

    // The base layer came by a cross-repository mount, never by an upload.
    expect(proxy.log).toContain(`POST /v2/b/app/blobs/uploads/?mount=${encodeURIComponent(baseLayer)}&from=${encodeURIComponent('a/base')} 201`);
    const uploads = proxy.log.filter((l) => l.startsWith('PUT /v2/b/app/blobs/uploads/'));
    expect(uploads.length).toBe(2); // the RUN layer and the config
    expect(uploads.some((l) => l.includes(encodeURIComponent(baseLayer)) || l.includes(baseLayer))).toBe(false);

    const inspect = spawnSync('skopeo', ['inspect', '--tls-verify=false', '--creds', `${USER}:${PASSWORD}`, `docker://${registry.host}/b/app:1`], { encoding: 'utf8' });
    expect(inspect.status, inspect.stderr).toBe(0);
    const info = JSON.parse(inspect.stdout) as { Layers: string[] };
    expect(info.Layers).toHaveLength(2);
    expect(info.Layers[0]).toBe(baseLayer);
  });

  it('exports and imports a registry cache (--cache-to/--cache-from type=registry) with the credentials of the CLI', async () => {
    const cacheRef = `${proxy.host}/c/cache:1`;
    const denied = await kiln(withoutCreds, ['--cache-to', `type=registry,ref=${proxy.host}/c/nocreds:1`, join(work, 'scratch-ctx')]);
    expect(denied.code, denied.stderr).toBe(1);
    expect(denied.stderr).toMatch(/unauthorized \(HTTP 401\)/);

    proxy.log.length = 0;
    const exported = await kiln(withCreds, ['--cache-to', `type=registry,ref=${cacheRef}`, join(work, 'ctx')]);
    expect(exported.code, `${exported.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
    expect(proxy.log).toContain('PUT /v2/c/cache/manifests/1 201');

    proxy.log.length = 0;
    const imported = await kiln(withCreds, ['--cache-from', `type=registry,ref=${cacheRef}`, join(work, 'ctx')]);
    expect(imported.code, imported.stderr).toBe(0);
    expect(proxy.log).toContain('GET /v2/c/cache/manifests/1 200');
    expect(daemon.logs()).not.toMatch(/failed to import build cache/);
  });
});
