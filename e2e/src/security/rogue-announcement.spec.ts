import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectNatsBus, createServiceDirectory, type EventBus, type ServiceDirectory } from '@kiln/bus';
import { runKiln, startKilnCluster, startKilnNats, type KilnCluster, type KilnNats, e2eWorkerTier } from '@kiln/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ARCH = process.arch === 'x64' ? 'amd64' : process.arch;

/** An HTTP/2 endpoint that counts the requests it gets (a worker would get Describe/Run). */
async function startRogue(tls?: { cert: Buffer; key: Buffer; ca: Buffer }): Promise<{ url: string; requests: () => number; close(): Promise<void> }> {
  let requests = 0;
  const server = tls ? http2.createSecureServer({ ...tls, requestCert: true, rejectUnauthorized: false }) : http2.createServer();
  server.on('stream', (stream) => {
    requests++;
    stream.respond({ ':status': 500 });
    stream.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `tcp://127.0.0.1:${port}`,
    requests: () => requests,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/**
 * Hole 3 (mTLS part): anyone who can publish on NATS could announce a
 * "worker" pointing at their own endpoint and be sent the cluster's builds
 * (ops, secrets mounted into them). A worker announcement must be believed
 * only once its endpoint proves the worker role with a cluster certificate.
 */
describe('a rogue worker announcement is ignored [topology=split]', () => {
  let nats: KilnNats;
  let cluster: KilnCluster;
  let bus: EventBus;
  let directory: ServiceDirectory;
  let ctx: string;
  const rogues: Awaited<ReturnType<typeof startRogue>>[] = [];
  const solverLogs = () => cluster.tiers.find((t) => t.name === 'solver-1')!.logs();

  beforeAll(async () => {
    nats = await startKilnNats();
    cluster = await startKilnCluster(nats).catch(async (err) => {
      await nats.stop();
      throw err;
    });
    ctx = mkdtempSync(join(tmpdir(), 'kiln-ctx-'));
    writeFileSync(join(ctx, 'hello.txt'), 'hello\n');
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM scratch\nCOPY hello.txt /\n');
    // Two rogues: plain h2c, and TLS with a real cluster certificate of the wrong role (a client's).
    const files = cluster.certs!.files('client');
    rogues.push(await startRogue());
    rogues.push(await startRogue({ cert: readFileSync(files.cert), key: readFileSync(files.key), ca: readFileSync(files.caCert) }));
    // The attacker holds the worker's NATS credentials (NATS lets them announce
    // as a worker) but no worker certificate of the cluster CA.
    bus = await connectNatsBus({
      servers: nats.url,
      name: 'rogue',
      auth: { user: 'worker', password: nats.password('worker') },
      tls: { ca: readFileSync(nats.certs.ca, 'utf8'), cert: readFileSync(nats.certs.clientCert, 'utf8'), key: readFileSync(nats.certs.clientKey, 'utf8') },
    });
    directory = createServiceDirectory(bus);
    for (const [i, r] of rogues.entries()) {
      await directory.announce({ tier: 'worker', id: `rogue-${i}`, url: r.url, platforms: [{ os: 'linux', architecture: ARCH }], labels: { 'kiln.tier': 'worker-oci' } });
    }
  }, 90_000);
  afterAll(async () => {
    await directory?.close();
    await bus?.close();
    for (const r of rogues) await r.close();
    await cluster?.stop();
    await nats?.stop();
    rmSync(ctx, { recursive: true, force: true });
  });

  it('logs and ignores both rogues; builds never reach them', async () => {
    const deadline = Date.now() + 20_000;
    while (!(solverLogs().includes('"id":"rogue-0"') && solverLogs().includes('"id":"rogue-1"'))) {
      if (Date.now() > deadline) throw new Error(`the solver never logged the rogue announcements:\n${solverLogs().slice(-4000)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const ignored = solverLogs().split('\n').filter((l) => l.includes('ignored a service announcement'));
    expect(ignored.some((l) => l.includes('"id":"rogue-0"'))).toBe(true);
    expect(ignored.some((l) => l.includes('"id":"rogue-1"'))).toBe(true);

    const workers = await runKiln(['workers', '--addr', cluster.addr], { env: cluster.env });
    expect(workers.code, workers.stderr).toBe(0);
    expect(workers.stdout).toContain(`${e2eWorkerTier()}-1`);
    expect(workers.stdout).not.toContain('rogue');

    const pinned = await runKiln(['build', '--addr', cluster.addr, '--progress=plain', '--worker-filter', 'id==rogue-1', ctx], { env: cluster.env });
    expect(pinned.code).not.toBe(0);
    for (let i = 0; i < 3; i++) {
      const res = await runKiln(['build', '--addr', cluster.addr, '--progress=plain', '--no-cache', ctx], { env: cluster.env });
      expect(res.code, `${res.stderr}\n${cluster.logs().slice(-4000)}`).toBe(0);
    }
    expect(rogues.map((r) => r.requests())).toEqual([0, 0]);
  }, 120_000);
});
