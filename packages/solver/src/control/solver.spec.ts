import { create, fromBinary } from '@bufbuild/protobuf';
import { control, exporter, frontend, llb as pb, worker } from '@kiln/api';
import { createMemoryBus } from '@kiln/bus';
import { createInMemoryTransport, createKilnClient, silentLogger, VertexError, type KilnError } from '@kiln/common';
import { FileChain, local, marshal, State } from '@kiln/llb';
import { describe, expect, it } from 'vitest';
import { sessionHostWith } from '../session/testing.js';
import { Solver } from './solver.js';

/** A solver wired to fakes of its neighbours over the router transport. */
function setup(opts: { failOn?: string; runDelayMs?: number; files?: Map<string, string>; epoch?: string } = {}) {
  const bus = createMemoryBus();
  const runs: string[] = [];
  const released: string[] = [];
  const exports: { type: string; ref: string }[] = [];
  const exportAttrs: Record<string, string>[] = [];
  const dockerfile = new TextEncoder().encode('FROM scratch\nCOPY a /a\nCOPY b /b\n');
  const ctx = local('context', { includePatterns: ['a', 'b'] });
  const a = FileChain.start().copy(ctx, '/a', '/a').apply(State.scratch(), { description: 'COPY a /a', sourceIndex: 0, ranges: [{ startLine: 2, endLine: 2 }] });
  const def = marshal(FileChain.start().copy(ctx, '/b', '/b').apply(a, { description: 'COPY b /b', sourceIndex: 0, ranges: [{ startLine: 3, endLine: 3 }] }), {
    sources: [{ filename: 'Dockerfile', data: dockerfile }],
  });
  const transport = createInMemoryTransport((r) => {
    r.service(frontend.FrontendService, { solve: async () => ({ definition: def, metadata: (opts.epoch ? { 'source-date-epoch': opts.epoch } : {}) as Record<string, string> }) });
    r.service(worker.WorkerService, {
      describe: async () => ({ id: 'w1' }),
      async run(req) {
        const op = fromBinary(pb.OpSchema, req.op);
        runs.push(req.description);
        await new Promise((r) => setTimeout(r, opts.runDelayMs ?? 1));
        if (opts.failOn && req.description === opts.failOn) throw new VertexError(`failed to copy: not found`, req.vertexDigest);
        // A local source's content digest covers every file, as the real worker's does.
        const content = opts.files && op.op.case === 'source' ? [`sha256:${[...opts.files].join(',')}`] : [];
        return { outputRefs: [`ref-${op.op.case}-${runs.length}`], contentDigests: content };
      },
      ...(opts.files
        ? {
            async checksum(req: worker.ChecksumRequest) {
              return { digest: `sha256:${req.selectors.map((s) => `${s.path}=${opts.files!.get(s.path) ?? 'missing'}`).join(',')}` };
            },
            retain: async () => ({ missing: [] }),
            drop: async () => ({}),
          }
        : {}),
      async *exportRef() {},
      async release(req) {
        released.push(...req.refs);
        return {};
      },
    });
    r.service(exporter.ExporterService, {
      async export(req) {
        exports.push({ type: req.type, ref: req.ref });
        exportAttrs.push(req.attrs);
        return { response: { 'exported.ref': req.ref } };
      },
    });
  });
  const workerClient = createKilnClient(worker.WorkerService, transport);
  const solver = new Solver({
    bus,
    logger: silentLogger(),
    sessions: sessionHostWith('s1'),
    frontend: async () => createKilnClient(frontend.FrontendService, transport),
    exporters: async () => createKilnClient(exporter.ExporterService, transport),
    workers: {
      list: async () => [{ id: 'w1', platforms: [], labels: {}, client: workerClient }],
      get: async (id) => (id === 'w1' ? { id, platforms: [], labels: {}, client: workerClient } : undefined),
    },
  });
  const request = (ref: string) =>
    create(control.SolveRequestSchema, { ref, sessionId: 's1', frontend: 'dockerfile.v0', exporters: [{ type: 'local', attrs: {} }] });
  return { solver, runs, released, exports, exportAttrs, request, bus };
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

describe('Solver', () => {
  it('runs the ops in order, exports the result and releases refs', async () => {
    const { solver, runs, exports, released, request } = setup();
    const res = await solver.solve(request('b1'), new AbortController().signal);
    expect(runs).toEqual(['local://context', 'COPY a /a', 'COPY b /b']);
    expect(exports).toEqual([{ type: 'local', ref: 'ref-file-3' }]);
    expect(res.exporterResponse).toEqual({ 'exported.ref': 'ref-file-3' });
    expect(released.sort()).toEqual(['ref-file-2', 'ref-file-3', 'ref-source-1']);
  });

  it('replays a finished build on Status, vertex by vertex', async () => {
    const { solver, request } = setup();
    await solver.solve(request('b2'), new AbortController().signal);
    await new Promise((r) => setTimeout(r, 10));
    const statuses = await collect(solver.status('b2', new AbortController().signal));
    const names = statuses.flatMap((s) => s.vertexes.filter((v) => v.completed).map((v) => v.name));
    expect(names).toEqual(['[internal] load build definition from Dockerfile', 'local://context', 'COPY a /a', 'COPY b /b', 'exporting to local']);
  });

  it('reports a failed op with the Dockerfile line and marks the vertex failed', async () => {
    const { solver, request } = setup({ failOn: 'COPY b /b' });
    const err = (await solver.solve(request('b3'), new AbortController().signal).catch((e: unknown) => e)) as KilnError;
    expect(err.code).toBe('vertex');
    expect(err.details).toMatchObject({ file: 'Dockerfile', line: 3 });
    await new Promise((r) => setTimeout(r, 10));
    const statuses = await collect(solver.status('b3', new AbortController().signal));
    expect(statuses.flatMap((s) => s.vertexes).find((v) => v.error)?.name).toBe('COPY b /b');
  });

  it('runs shared steps once for concurrent builds of the same session, and both builds show them', async () => {
    const { solver, runs, request } = setup({ runDelayMs: 30, files: new Map([['/a', 'A'], ['/b', 'B']]) });
    await Promise.all([solver.solve(request('c1'), new AbortController().signal), solver.solve(request('c2'), new AbortController().signal)]);
    expect(runs.filter((r) => r === 'COPY a /a')).toHaveLength(1);
    expect(runs.filter((r) => r === 'COPY b /b')).toHaveLength(1);
    await new Promise((r) => setTimeout(r, 10));
    for (const ref of ['c1', 'c2']) {
      const done = (await collect(solver.status(ref, new AbortController().signal))).flatMap((s) => s.vertexes.filter((v) => v.completed));
      expect(done.map((v) => v.name)).toEqual(expect.arrayContaining(['COPY a /a', 'COPY b /b']));
    }
  });

  it('fails a build waiting for a step another build runs with that step\'s error, without running it again', async () => {
    const { solver, runs, request } = setup({ runDelayMs: 30, failOn: 'COPY a /a', files: new Map([['/a', 'A'], ['/b', 'B']]) });
    const results = await Promise.allSettled([solver.solve(request('f1'), new AbortController().signal), solver.solve(request('f2'), new AbortController().signal)]);
    expect(results.map((r) => (r.status === 'rejected' ? (r.reason as KilnError).code : 'ok'))).toEqual(['vertex', 'vertex']);
    expect(runs.filter((r) => r === 'COPY a /a')).toHaveLength(1);
  });

  it('keys a copy by the checksum of the paths it reads: changing a file only a later step reads keeps the earlier one cached', async () => {
    const files = new Map([['/a', 'A'], ['/b', 'B']]);
    const { solver, runs, request } = setup({ files });
    await solver.solve(request('k1'), new AbortController().signal);
    expect(runs).toEqual(['local://context', 'COPY a /a', 'COPY b /b']);
    files.set('/b', 'B2');
    runs.length = 0;
    await solver.solve(request('k2'), new AbortController().signal);
    expect(runs).toEqual(['local://context', 'COPY b /b']);
    files.set('/c', 'never read');
    runs.length = 0;
    await solver.solve(request('k3'), new AbortController().signal);
    expect(runs).toEqual(['local://context']);
    files.set('/a', 'A2');
    runs.length = 0;
    await solver.solve(request('k4'), new AbortController().signal);
    expect(runs).toEqual(['local://context', 'COPY a /a', 'COPY b /b']);
  });

  it("gives the frontend's SOURCE_DATE_EPOCH to image exporters that have none of their own", async () => {
    const { solver, exportAttrs } = setup({ epoch: '1700000001' });
    const req = create(control.SolveRequestSchema, {
      ref: 'epoch-1', sessionId: 's1', frontend: 'dockerfile.v0',
      exporters: [{ type: 'oci', attrs: { 'session.output': 'o' } }, { type: 'image', attrs: { 'source-date-epoch': '5' } }, { type: 'local', attrs: {} }],
    });
    await solver.solve(req, new AbortController().signal);
    expect(exportAttrs).toEqual([{ 'session.output': 'o', 'source-date-epoch': '1700000001' }, { 'source-date-epoch': '5' }, {}]);
  });

  it('rejects a bad build ref', async () => {
    const { solver, request } = setup();
    await expect(solver.solve(request('../x'), new AbortController().signal)).rejects.toMatchObject({ code: 'invalid_argument' });
  });

  it('keeps a history record of each build: status, steps, exporter response, error, replayable logs', async () => {
    const ok = setup();
    await ok.solver.solve(ok.request('h1'), new AbortController().signal);
    const rec = ok.solver.inspectHistory('h1').record!;
    expect(rec).toMatchObject({ ref: 'h1', status: 'completed', frontend: 'dockerfile.v0', exporters: ['local'], numTotalSteps: 5, numCompletedSteps: 5, numCachedSteps: 0 });
    expect(rec.exporterResponse).toEqual({ 'exported.ref': 'ref-file-3' });
    const replay = await collect(ok.solver.historyLogs('h', new AbortController().signal));
    expect(replay.flatMap((r) => r.status!.vertexes.filter((v) => v.completed).map((v) => v.name))).toContain('COPY b /b');
    await ok.solver.solve(ok.request('h2'), new AbortController().signal);
    expect(ok.solver.inspectHistory('h2').record).toMatchObject({ status: 'completed', numTotalSteps: 5 });
    expect(ok.solver.listHistory(0).records.map((r) => r.ref)).toEqual(['h2', 'h1']);
    expect(ok.solver.deleteHistory(['h1']).deleted).toEqual(['h1']);
    expect(() => ok.solver.inspectHistory('h1')).toThrow(/no build "h1"/);

    const bad = setup({ failOn: 'COPY b /b' });
    await bad.solver.solve(bad.request('h3'), new AbortController().signal).catch(() => undefined);
    expect(bad.solver.inspectHistory('').record).toMatchObject({ ref: 'h3', status: 'error', error: 'failed to copy: not found', errorCode: 'vertex' });
  });
});
