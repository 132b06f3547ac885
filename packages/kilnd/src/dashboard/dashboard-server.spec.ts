import { create } from '@bufbuild/protobuf';
import { Code, ConnectError, createClient, type Interceptor } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-web';
import { control, events } from '@kiln/api';
import { createDirectTransport, createKilnClient, silentLogger } from '@kiln/common';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDashboard, type RunningDashboard } from './dashboard-server.js';

/**
 * The dashboard listener against a Control service that records every
 * call: the attacks (no token, a wrong one, another Host, a write method
 * with the right token) are refused, and the read methods pass through
 * over the browser's own client library (connect-web on Node's fetch).
 */
describe('dashboard server: token access, read-only Control', () => {
  const calls: string[] = [];
  let assets: string;
  let dash: RunningDashboard;
  let base: string;

  beforeAll(async () => {
    assets = mkdtempSync(join(tmpdir(), 'kiln-dash-assets-'));
    writeFileSync(join(assets, 'index.html'), '<!doctype html><title>Kiln dashboard</title>');
    writeFileSync(join(assets, 'app.js'), 'console.log("kiln");');
    const controlImpl = {
      solve: () => (calls.push('Solve'), create(control.SolveResponseSchema)),
      prune: async function* () {
        calls.push('Prune');
        yield create(control.PruneResponseSchema);
      },
      deleteHistory: () => (calls.push('DeleteHistory'), create(control.DeleteHistoryResponseSchema)),
      listWorkers: () => (calls.push('ListWorkers'), create(control.ListWorkersResponseSchema, { record: [{ id: 'w1', labels: { pool: 'a' }, runningBuilds: 2 }] })),
      status: async function* (req: control.StatusRequest) {
        calls.push(`Status ${req.ref}`);
        yield create(control.StatusResponseSchema, { vertexes: [create(events.VertexSchema, { digest: 'sha256:aa', name: '[1/2] RUN echo hi', cached: true })] });
        yield create(control.StatusResponseSchema, { logs: [create(events.VertexLogSchema, { vertex: 'sha256:aa', stream: 1, msg: new TextEncoder().encode('hi\n') })] });
      },
    };
    const transport = createDirectTransport((r) => r.service(control.ControlService, controlImpl));
    dash = await startDashboard({ address: { kind: 'tcp', host: '127.0.0.1', port: 0 }, control: createKilnClient(control.ControlService, transport), assetsDir: assets, logger: silentLogger(), token: 'tok-123' });
    base = `http://127.0.0.1:${dash.port}`;
  });

  afterAll(async () => {
    await dash?.close();
    rmSync(assets, { recursive: true, force: true });
  });

  const rpc = (method: string, headers: Record<string, string>) =>
    fetch(`${base}/kiln.control.v1.ControlService/${method}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: '{}' });

  it('refuses every request without the token: page, script and API alike', async () => {
    for (const path of ['/', '/index.html', '/app.js']) expect((await fetch(base + path)).status).toBe(401);
    expect((await rpc('ListWorkers', {})).status).toBe(401);
    expect((await rpc('ListWorkers', { authorization: 'Bearer tok-12' })).status).toBe(401);
    expect((await rpc('ListWorkers', { cookie: 'kiln_dashboard=nope' })).status).toBe(401);
    expect((await fetch(`${base}/?token=wrong`, { redirect: 'manual' })).status).toBe(401);
    expect(calls).toEqual([]);
  });

  it('turns the URL token into an HttpOnly SameSite=Strict cookie and serves the page with it', async () => {
    const first = await fetch(dash.url, { redirect: 'manual' });
    expect(first.status).toBe(303);
    expect(first.headers.get('location')).toBe('/');
    const cookie = first.headers.get('set-cookie')!;
    expect(cookie).toMatch(/^kiln_dashboard=tok-123; Path=\/; HttpOnly; SameSite=Strict$/);
    const page = await fetch(`${base}/`, { headers: { cookie: cookie.split(';')[0]! } });
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('Kiln dashboard');
    expect(page.headers.get('content-security-policy')).toContain("default-src 'self'");
    expect(page.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
    expect((await fetch(`${base}/../../etc/passwd`, { headers: { authorization: 'Bearer tok-123' } })).status).toBe(404);
  });

  it('refuses a Host header other than this loopback listener (DNS rebinding), even with the token', async () => {
    const { request } = await import('node:http');
    const status = await new Promise<number>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: dash.port, path: '/', headers: { host: `evil.example:${dash.port}`, cookie: 'kiln_dashboard=tok-123' } }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      req.on('error', reject);
      req.end();
    });
    expect(status).toBe(421);
  });

  it('passes the read methods through, Status as a stream, over connect-web', async () => {
    const auth: Interceptor = (next) => (req) => {
      req.header.set('authorization', 'Bearer tok-123');
      return next(req);
    };
    const client = createClient(control.ControlService, createConnectTransport({ baseUrl: base, interceptors: [auth] }));
    const workers = await client.listWorkers({});
    expect(workers.record.map((w) => [w.id, w.labels['pool'], w.runningBuilds])).toEqual([['w1', 'a', 2]]);
    const updates = [];
    for await (const u of client.status({ ref: 'b1' })) updates.push(u);
    expect(updates[0]!.vertexes[0]!.cached).toBe(true);
    expect(new TextDecoder().decode(updates[1]!.logs[0]!.msg)).toBe('hi\n');
    expect(calls).toEqual(['ListWorkers', 'Status b1']);
  });

  it('refuses the write methods (Solve, Prune, DeleteHistory, ImportHistory), ExportHistory, OpenHistory and every other service, with the token', async () => {
    const auth: Interceptor = (next) => (req) => {
      req.header.set('authorization', 'Bearer tok-123');
      return next(req);
    };
    const client = createClient(control.ControlService, createConnectTransport({ baseUrl: base, interceptors: [auth] }));
    await expect(client.solve({ ref: 'x' })).rejects.toSatisfy((e: unknown) => e instanceof ConnectError && e.code === Code.Unimplemented);
    await expect(client.deleteHistory({ refs: ['x'] })).rejects.toSatisfy((e: unknown) => e instanceof ConnectError && e.code === Code.Unimplemented);
    // history import writes; export and open are the CLI's (open hands out this very token).
    await expect(client.importHistory({})).rejects.toSatisfy((e: unknown) => e instanceof ConnectError && e.code === Code.Unimplemented);
    await expect(client.openHistory({})).rejects.toSatisfy((e: unknown) => e instanceof ConnectError && e.code === Code.Unimplemented);
    await expect((async () => {
      for await (const _ of client.exportHistory({})) void _;
    })()).rejects.toSatisfy((e: unknown) => e instanceof ConnectError && e.code === Code.Unimplemented);
    await expect((async () => {
      for await (const _ of client.prune({})) void _;
    })()).rejects.toSatisfy((e: unknown) => e instanceof ConnectError && e.code === Code.Unimplemented);
    for (const path of ['/kiln.session.v1.SessionService/Attach', '/kiln.worker.v1.WorkerService/Run']) {
      const res = await fetch(base + path, { method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Bearer tok-123' }, body: '{}' });
      expect(res.status).toBe(404);
    }
    expect(calls.filter((c) => ['Solve', 'Prune', 'DeleteHistory'].includes(c))).toEqual([]);
  });

  it('listens only on loopback', async () => {
    await expect(startDashboard({ address: { kind: 'tcp', host: '0.0.0.0', port: 0 }, control: createKilnClient(control.ControlService, createDirectTransport(() => undefined)), assetsDir: assets, logger: silentLogger() })).rejects.toThrow(/loopback/);
  });
});
