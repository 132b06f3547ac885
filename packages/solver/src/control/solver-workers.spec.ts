import { create } from '@bufbuild/protobuf';
import { content, control, exporter, frontend, worker } from '@kiln/api';
import { createMemoryBus } from '@kiln/bus';
import { createInMemoryTransport, createKilnClient, silentLogger, UnavailableError, VertexError, type KilnError } from '@kiln/common';
import { execState, FileChain, image, local, marshal, State } from '@kiln/llb';
import { describe, expect, it } from 'vitest';
import { sessionHostWith } from '../session/testing.js';
import { Solver } from './solver.js';
import type { WorkerHandle } from './workers.js';

/** `leaving`: answers Describe but its first step fails as it leaves the pool (a stopping worker). */
type Behaviour = 'ok' | 'dead' | 'failing-step' | 'leaving';

/** A solver over fake workers: each records the steps it ran; a dead one refuses every call, as a killed process does. */
function setup(workers: { id: string; labels?: Record<string, string>; behaviour?: Behaviour }[], opts: { runDelayMs?: number; stepMs?: Record<string, number>; targets?: Record<string, ReturnType<typeof marshal>>; contentTier?: boolean } = {}) {
  const bus = createMemoryBus();
  const ran = new Map<string, string[]>();
  const exported: string[] = [];
  const present = new Set(workers.map((w) => w.id));
  const ctx = local('context', { includePatterns: ['a'] });
  const def = marshal(FileChain.start().copy(ctx, '/a', '/a').apply(State.scratch(), { description: 'COPY a /a' }));
  const behaviours = new Map<string, Behaviour>();
  const handles: WorkerHandle[] = workers.map((w) => {
    ran.set(w.id, []);
    const behaviour = () => behaviours.get(w.id) ?? 'ok';
    behaviours.set(w.id, w.behaviour ?? 'ok');
    const down = () => new UnavailableError(`connect ECONNREFUSED (worker ${w.id})`);
    const transport = createInMemoryTransport((r) =>
      r.service(worker.WorkerService, {
        async describe() {
          if (behaviour() === 'dead') throw down();
          return { id: w.id };
        },
        async run(req) {
          if (behaviour() === 'dead') throw down();
          if (behaviour() === 'leaving') {
            present.delete(w.id);
            throw new UnavailableError(`worker ${w.id} is shutting down`);
          }
          await new Promise((r) => setTimeout(r, opts.stepMs?.[req.description] ?? opts.runDelayMs ?? 1));
          if (behaviour() === 'failing-step' && req.description === 'COPY a /a') throw new VertexError('failed to copy: not found', req.vertexDigest);
          ran.get(w.id)!.push(req.description);
          return { outputRefs: [`${w.id}-ref-${ran.get(w.id)!.length}`], contentDigests: [] };
        },
        async retain() {
          if (behaviour() === 'dead') throw down();
          return { missing: [] };
        },
        drop: async () => ({}),
        release: async () => ({}),
        // Results moved between workers (with `contentTier`): one 10-byte layer each.
        refUsage: async (req) => ({ usage: req.refs.map((ref) => ({ ref, found: true, size: 10n })) }),
        getLayers: async () => ({ layers: [{ digest: `sha256:${'1'.repeat(64)}`, size: 10n, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', diffId: `sha256:${'2'.repeat(64)}` }] }),
        importLayers: async () => ({ ref: `${w.id}-imported` }),
      }),
    );
    return { id: w.id, platforms: [], labels: w.labels ?? {}, client: createKilnClient(worker.WorkerService, transport) };
  });
  const tiers = createInMemoryTransport((r) => {
    r.service(frontend.FrontendService, { solve: async (req) => ({ definition: opts.targets?.[req.attrs['target'] ?? ''] ?? def }) });
    r.service(content.ContentService, { createLease: async (req) => ({ lease: { id: req.id } }), deleteLease: async () => ({}) });
    r.service(exporter.ExporterService, {
      async export(req) {
        exported.push(req.workerId);
        return { response: { worker: req.workerId } };
      },
    });
  });
  const solver = new Solver({
    bus,
    logger: silentLogger(),
    sessions: sessionHostWith('s1'),
    frontend: async () => createKilnClient(frontend.FrontendService, tiers),
    exporters: async () => createKilnClient(exporter.ExporterService, tiers),
    content: opts.contentTier ? async () => createKilnClient(content.ContentService, tiers) : undefined,
    workers: {
      list: async () => handles.filter((h) => present.has(h.id)),
      get: async (id) => handles.find((h) => h.id === id && present.has(id)),
    },
  });
  const request = (ref: string, workerFilter: string[] = []) =>
    create(control.SolveRequestSchema, { ref, sessionId: 's1', frontend: 'dockerfile.v0', exporters: [{ type: 'local', attrs: {} }], workerFilter });
  const warnings = async (ref: string) => {
    const out: string[] = [];
    for await (const s of solver.status(ref, new AbortController().signal)) out.push(...s.warnings.map((w) => new TextDecoder().decode(w.short)));
    return out;
  };
  return { solver, ran, exported, request, warnings, present, behaviours };
}

const signal = () => new AbortController().signal;

describe('Solver worker choice', () => {
  it('routes a build by --worker-filter labels and id', async () => {
    const { solver, ran, request } = setup([
      { id: 'w1', labels: { pool: 'a' } },
      { id: 'w2', labels: { pool: 'b' } },
    ]);
    expect((await solver.solve(request('f1', ['labels.pool==b']), signal())).exporterResponse).toEqual({ worker: 'w2' });
    expect((await solver.solve(request('f2', ['id==w1']), signal())).exporterResponse).toEqual({ worker: 'w1' });
    expect(ran.get('w2')).toEqual(['local://context', 'COPY a /a']);
  });

  it('fails with failed_precondition naming the filter and the labels when no worker matches', async () => {
    const { solver, ran, request } = setup([{ id: 'w1', labels: { pool: 'a' } }]);
    const err = (await solver.solve(request('f3', ['labels.pool==z']), signal()).catch((e: unknown) => e)) as KilnError;
    expect(err.code).toBe('failed_precondition');
    expect(err.message).toContain('no worker matches --worker-filter labels.pool==z (workers: w1 {pool=a})');
    expect(ran.get('w1')).toEqual([]);
    const bad = (await solver.solve(request('f4', ['pool=a']), signal()).catch((e: unknown) => e)) as KilnError;
    expect(bad).toMatchObject({ code: 'invalid_argument', details: { field: '--worker-filter' } });
  });

  it('spreads concurrent builds over the fitting workers', async () => {
    const { solver, ran, exported, request } = setup([{ id: 'w1' }, { id: 'w2' }], { runDelayMs: 40 });
    await Promise.all([solver.solve(request('s1'), signal()), solver.solve(request('s2'), signal())]);
    expect(exported.sort()).toEqual(['w1', 'w2']);
    // Each ran its build's steps: results never cross workers.
    expect(ran.get('w1')).toEqual(['local://context', 'COPY a /a']);
    expect(ran.get('w2')).toEqual(['local://context', 'COPY a /a']);
    // Idle again: the next build goes to the lowest id.
    await solver.solve(request('s3'), signal());
    expect(exported.at(-1)).toBe('w1');
  });

  it('retries a build once on another worker when its worker is unreachable, with a warning naming both', async () => {
    const { solver, ran, request, warnings } = setup([{ id: 'w1', behaviour: 'dead' }, { id: 'w2' }]);
    const res = await solver.solve(request('r1'), signal());
    expect(res.exporterResponse).toEqual({ worker: 'w2' });
    expect(ran.get('w2')).toEqual(['local://context', 'COPY a /a']);
    const warned = await warnings('r1');
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatch(/^worker "w1" was lost \(.*ECONNREFUSED.*\); retrying the build on worker "w2"$/);
  });

  it('retries when the worker left the pool during the build', async () => {
    const t = setup([{ id: 'w1', behaviour: 'leaving' }, { id: 'w2' }]);
    const res = await t.solver.solve(t.request('r2'), signal());
    expect(res.exporterResponse).toEqual({ worker: 'w2' });
    expect(await t.warnings('r2')).toEqual([expect.stringMatching(/^worker "w1" was lost .*retrying the build on worker "w2"$/)]);
  });

  it('runs a stage on the worker holding its cache, and again on the build worker when that worker is lost mid-build', async () => {
    // FROM base AS b; RUN b / FROM base; RUN m1; RUN m2; RUN m3; COPY --from=b /b /b
    // w1 holds the 3 RUN m (600 ms in all: the build's worker), w2 the base and RUN b (which took 400 ms: more than
    // moving its result): only placing stage b there makes the build touch w2.
    const base = image('busybox:1@sha256:' + 'b'.repeat(64));
    const b = execState(base, ['b'], {}, { description: 'RUN b' });
    const main = execState(execState(execState(base, ['m1'], {}, { description: 'RUN m1' }), ['m2'], {}, { description: 'RUN m2' }), ['m3'], {}, { description: 'RUN m3' });
    const full = FileChain.start().copy(b, '/b', '/b').apply(main, { description: 'COPY --from=b' });
    const t = setup([{ id: 'w1' }, { id: 'w2' }], { stepMs: { 'RUN b': 400, 'RUN m1': 200, 'RUN m2': 200, 'RUN m3': 200 }, targets: { main: marshal(main), b: marshal(b), full: marshal(full) } });
    const req = (ref: string, target: string, filter: string[] = []) => {
      const r = t.request(ref, filter);
      r.frontendAttrs['target'] = target;
      return r;
    };
    await t.solver.solve(req('p1', 'main', ['id==w1']), signal());
    await t.solver.solve(req('p2', 'b', ['id==w2']), signal());
    expect(t.ran.get('w2')).toContain('RUN b');
    // w2 dies (a SIGKILL: still in the directory, answering nothing).
    t.behaviours.set('w2', 'dead');
    const res = await t.solver.solve(req('p3', 'full'), signal());
    expect(res.exporterResponse).toEqual({ worker: 'w1' });
    expect(t.ran.get('w1')).toContain('RUN b');
    expect(t.ran.get('w1')).toContain('COPY --from=b');
    expect(await t.warnings('p3')).toEqual([expect.stringMatching(/^worker "w2" was lost \(.*\); retrying the build on worker "w1"$/)]);
  });

  it('counts a branch worker busy with a build only until the branch\'s steps end', async () => {
    // w1 holds RUN m1 and m2 (600 ms), w2 RUN b (400 ms); the final stage ends with a slow step on the build's worker w1.
    const base = image('busybox:1@sha256:' + 'b'.repeat(64));
    const b = execState(base, ['b'], {}, { description: 'RUN b' });
    const main = execState(execState(base, ['m1'], {}, { description: 'RUN m1' }), ['m2'], {}, { description: 'RUN m2' });
    const full = execState(FileChain.start().copy(b, '/b', '/b').apply(main, { description: 'COPY --from=b' }), ['slow'], {}, { description: 'RUN slow' });
    const other = execState(base, ['o'], {}, { description: 'RUN other' });
    const t = setup([{ id: 'w1' }, { id: 'w2' }], {
      contentTier: true,
      stepMs: { 'RUN b': 400, 'RUN m1': 300, 'RUN m2': 300, 'RUN slow': 600 },
      targets: { main: marshal(main), b: marshal(b), full: marshal(full), other: marshal(other) },
    });
    const req = (ref: string, target: string, filter: string[] = []) => {
      const r = t.request(ref, filter);
      r.frontendAttrs['target'] = target;
      return r;
    };
    await t.solver.solve(req('c1', 'main', ['id==w1']), signal());
    await t.solver.solve(req('c2', 'b', ['id==w2']), signal());
    const full1 = t.solver.solve(req('c3', 'full'), signal());
    // Stage b (cached on w2) is done long before RUN slow ends on w1: w2 is idle again, so a build with no cache anywhere goes there.
    const until = Date.now() + 5000;
    while (!t.ran.get('w1')!.includes('COPY --from=b') && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    const res = await t.solver.solve(req('c4', 'other'), signal());
    expect((await full1).exporterResponse).toEqual({ worker: 'w1' });
    expect(res.exporterResponse).toEqual({ worker: 'w2' });
    expect(t.ran.get('w2')).toContain('RUN other');
    // Stage b ran once, on w2 (c2), and was taken from its cache there for c3.
    expect(t.ran.get('w2')!.filter((d) => d === 'RUN b')).toHaveLength(1);
    expect(t.ran.get('w1')).not.toContain('RUN b');
  });

  it('does not retry a failing step, nor when no other worker fits', async () => {
    const failing = setup([{ id: 'w1', behaviour: 'failing-step' }, { id: 'w2' }]);
    const err = (await failing.solver.solve(failing.request('n1'), signal()).catch((e: unknown) => e)) as KilnError;
    expect(err.code).toBe('vertex');
    expect(failing.ran.get('w2')).toEqual([]);
    expect(await failing.warnings('n1')).toEqual([]);

    const alone = setup([{ id: 'w1', behaviour: 'dead', labels: { pool: 'a' } }, { id: 'w2', labels: { pool: 'b' } }]);
    const lost = (await alone.solver.solve(alone.request('n2', ['labels.pool==a']), signal()).catch((e: unknown) => e)) as KilnError;
    expect(lost.code).toBe('unavailable');
    expect(lost.message).toMatch(/^worker "w1" was lost \(.*ECONNREFUSED \(worker w1\)\) and no other fitting worker is available to retry the build$/);
    expect(alone.ran.get('w2')).toEqual([]);
  });
});
