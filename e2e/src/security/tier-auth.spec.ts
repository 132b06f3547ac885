import { content, control, worker } from '@kiln/api';
import { asKilnError, createKilnClient, createNodeTransport, loadTlsCredentials, sha256, type TierRole } from '@kiln/common';
import { runKiln, startKilnCluster, startKilnNats, type KilnCluster, type KilnNats } from '@kiln/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/**
 * Hole 2 of the security review: every tier port used to be plain HTTP/2
 * without authentication. These calls are the attacks, made straight at
 * the tiers of a real split cluster (mTLS, as the testkit starts it).
 */
describe('tier ports refuse callers without the right certificate [topology=split]', () => {
  let nats: KilnNats;
  let cluster: KilnCluster;
  const codeOf = async (call: Promise<unknown>): Promise<string> => {
    try {
      await call;
      return 'ok';
    } catch (err) {
      return asKilnError(err).code;
    }
  };
  /** A client of tier `id` presenting certificate `name` (or none: plain h2c). */
  const clientOf = <S extends typeof worker.WorkerService | typeof content.ContentService | typeof control.ControlService>(service: S, id: string, name?: string, serverRoles?: TierRole[]) =>
    createKilnClient(service, createNodeTransport(cluster.addrs[id]!, name ? { tls: loadTlsCredentials(cluster.certs!.files(name)), serverRoles } : {}));
  const drain = async (it: AsyncIterable<unknown>) => {
    for await (const _ of it);
  };

  beforeAll(async () => {
    nats = await startKilnNats();
    cluster = await startKilnCluster(nats, ['content', 'solver', 'frontend', 'exporters', 'worker-oci']).catch(async (err) => {
      await nats.stop();
      throw err;
    });
  }, 90_000);
  afterAll(async () => {
    await cluster?.stop();
    await nats?.stop();
  });

  it('refuses a client with no certificate: worker Run, content Delete, control Prune', async () => {
    const codes = await Promise.all([
      codeOf(clientOf(worker.WorkerService, 'worker-oci-1').run({ buildId: 'x', entitlements: ['security.insecure'] }, { timeoutMs: 5000 })),
      codeOf(clientOf(content.ContentService, 'content-1').delete({ digest: sha256('nothing') }, { timeoutMs: 5000 })),
      codeOf(clientOf(content.ContentService, 'content-1').info({ digest: sha256('nothing') }, { timeoutMs: 5000 })),
      codeOf(drain(clientOf(control.ControlService, 'solver-1').prune({ all: true }, { timeoutMs: 5000 }))),
    ]);
    // Refused by the TLS handshake before any handler runs: never ok, not_found or
    // invalid_argument from the service itself (the connection is dropped: canceled/unavailable).
    // A plain HTTP/2 client whose connection the TLS listener drops may also see `internal` (a protocol error).
    for (const code of codes) expect(['unavailable', 'canceled', 'deadline_exceeded', 'internal']).toContain(code);
  });

  it('the CLI without a certificate is refused, and told what is missing', async () => {
    const res = await runKiln(['prune', '-f', '--addr', cluster.addr]);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain('give --tlscacert, --tlscert and --tlskey');
    const ok = await runKiln(['du', '--addr', cluster.addr], { env: cluster.env });
    expect(ok.code, ok.stderr).toBe(0);
  });

  it('refuses a certificate whose role may not call the method', async () => {
    // A worker may not run ops on another worker; only the solver may.
    expect(await codeOf(clientOf(worker.WorkerService, 'worker-oci-1', 'worker', ['worker']).run({ buildId: 'x' }))).toBe('permission_denied');
    // A build client may not run ops on a worker, nor delete content, nor collect garbage.
    expect(await codeOf(clientOf(worker.WorkerService, 'worker-oci-1', 'client', ['worker']).run({ buildId: 'x', entitlements: ['security.insecure'] }))).toBe('permission_denied');
    expect(await codeOf(clientOf(content.ContentService, 'content-1', 'client', ['content']).delete({ digest: sha256('nothing') }))).toBe('permission_denied');
    expect(await codeOf(clientOf(content.ContentService, 'content-1', 'client', ['content']).garbageCollect({}))).toBe('permission_denied');
    // The exporters write content but never delete it.
    expect(await codeOf(clientOf(content.ContentService, 'content-1', 'exporters', ['content']).delete({ digest: sha256('nothing') }))).toBe('permission_denied');
    // A tier may not drive the solver's Control API (prune, history): that is the client's.
    expect(await codeOf(drain(clientOf(control.ControlService, 'solver-1', 'worker', ['solver']).prune({ all: true })))).toBe('permission_denied');
  });

  it('lets the roles the table allows through (the checks are not deny-all)', async () => {
    // The handler answers: not_found for a blob that is not there, not permission_denied.
    expect(await codeOf(clientOf(content.ContentService, 'content-1', 'solver', ['content']).delete({ digest: sha256('nothing') }))).toBe('not_found');
    expect(await codeOf(clientOf(content.ContentService, 'content-1', 'worker', ['content']).info({ digest: sha256('nothing') }))).toBe('not_found');
    expect(await codeOf(clientOf(control.ControlService, 'solver-1', 'client', ['solver']).info({}))).toBe('ok');
  });

  it('refuses a server that cannot prove the role the client expects', async () => {
    // A client dialing the content tier while expecting a solver: the handshake fails on the role.
    const err = await codeOf(clientOf(control.ControlService, 'content-1', 'client', ['solver']).info({}, { timeoutMs: 5000 }));
    expect(err).not.toBe('ok');
  });
});
