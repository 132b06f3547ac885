import { create } from '@bufbuild/protobuf';
import { llb as pb } from '@kiln/api';
import type { KilnError } from '@kiln/common';
import { execState, FileChain, git, image, marshal, parseDefinition, State, type ParsedDefinition } from '@kiln/llb';
import { describe, expect, it } from 'vitest';
import { constraintFilters, pickWorker } from './pick-worker.js';
import { MAX_CACHE_LOAD_GAP } from './placement-cost.js';
import { parseWorkerFilter, parseWorkerFilters } from './worker-filter.js';
import type { WorkerHandle } from './workers.js';

const platform = (s: string) => {
  const [os, architecture, variant] = s.split('/');
  return create(pb.PlatformSchema, { os, architecture, variant: variant ?? '' });
};

function worker(id: string, platforms: string[], labels: Record<string, string> = {}, ops?: string[]): WorkerHandle {
  return { id, platforms: platforms.map(platform), labels, ...(ops ? { ops } : {}), client: {} as WorkerHandle['client'] };
}

/** A definition with one RUN for `target` (or none: a COPY-only build). */
function runFor(target: string | undefined): ParsedDefinition {
  const base = image('busybox:latest', target ? { platform: platform(target) } : {});
  const out = target ? execState(base, ['true']) : FileChain.start().mkdir('/x', 0o755).apply(State.scratch());
  return parseDefinition(marshal(out));
}

describe('pickWorker', () => {
  const amd = worker('a-amd64', ['linux/amd64']);
  const arm = worker('b-arm64', ['linux/arm64/v8']);
  const emulating = worker('c-amd64-qemu', ['linux/amd64', 'linux/arm64', 'linux/riscv64']);

  it('picks a worker that runs the platform of every RUN, natively or emulated', () => {
    expect(pickWorker([amd, arm], [runFor('linux/arm64')]).id).toBe('b-arm64');
    expect(pickWorker([amd, arm, emulating], [runFor('linux/riscv64')]).id).toBe('c-amd64-qemu');
    expect(pickWorker([amd, arm, emulating], [runFor('linux/amd64'), runFor('linux/arm64')]).id).toBe('c-amd64-qemu');
  });

  it('lets any worker build a definition without RUN steps', () => {
    expect(pickWorker([arm, amd], [runFor(undefined)]).id).toBe('a-amd64');
  });

  it('fails with failed_precondition naming the platform when no worker fits', () => {
    const err = catchErr(() => pickWorker([amd, arm], [runFor('linux/s390x')]));
    expect(err.code).toBe('failed_precondition');
    expect(err.message).toMatch(/no worker can run steps for platform linux\/s390x \(workers offer: linux\/amd64, linux\/arm64\/v8\)/);
    expect(err.details.digest).toMatch(/^sha256:/);
    expect(catchErr(() => pickWorker([amd, arm], [runFor('linux/amd64'), runFor('linux/arm64')])).message).toMatch(/no one worker can run steps for all of/);
    expect(catchErr(() => pickWorker([], [runFor(undefined)])).code).toBe('unavailable');
  });

  it('keeps to the workers matching the filters', () => {
    const a = worker('w-a', ['linux/amd64'], { pool: 'a', 'kiln.tier': 'worker-oci' });
    const b = worker('w-b', ['linux/amd64'], { pool: 'b', 'kiln.tier': 'worker-oci' });
    const def = [runFor('linux/amd64')];
    expect(pickWorker([a, b], def, { filters: parseWorkerFilters(['labels.pool==b']) }).id).toBe('w-b');
    expect(pickWorker([a, b], def, { filters: parseWorkerFilters(['id==w-b']) }).id).toBe('w-b');
    expect(pickWorker([a, b], def, { filters: parseWorkerFilters(['labels.pool!=a']) }).id).toBe('w-b');
    expect(pickWorker([a, b], def, { filters: parseWorkerFilters(['labels."kiln.tier"==worker-oci,labels.pool~=^[b-z]$']) }).id).toBe('w-b');
    expect(pickWorker([a, b], def, { filters: parseWorkerFilters(['labels.kiln.tier==worker-oci', 'labels.pool==b']) }).id).toBe('w-b');
  });

  it('fails with failed_precondition listing the filter and the workers\' labels when none matches', () => {
    const a = worker('w-a', ['linux/amd64'], { pool: 'a' });
    const b = worker('w-b', ['linux/arm64'], { pool: 'b' });
    const err = catchErr(() => pickWorker([a, b], [runFor(undefined)], { filters: parseWorkerFilters(['labels.pool==c']) }));
    expect(err.code).toBe('failed_precondition');
    expect(err.message).toBe('no worker matches --worker-filter labels.pool==c (workers: w-a {pool=a}; w-b {pool=b})');
    const wrongPlatform = catchErr(() => pickWorker([a, b], [runFor('linux/arm64')], { filters: parseWorkerFilters(['labels.pool==a']) }));
    expect(wrongPlatform.message).toMatch(/^no worker matching --worker-filter labels.pool==a can run steps for platform linux\/arm64 \(workers offer: linux\/amd64\)/);
  });

  it('spreads builds: the least busy fitting worker, ties to the lowest id', () => {
    const w1 = worker('w1', ['linux/amd64']);
    const w2 = worker('w2', ['linux/amd64']);
    const w3 = worker('w3', ['linux/arm64']);
    const def = [runFor('linux/amd64')];
    const load = new Map<string, number>();
    const picks: string[] = [];
    for (let i = 0; i < 4; i++) {
      const w = pickWorker([w3, w2, w1], def, { load: (id) => load.get(id) ?? 0 });
      load.set(w.id, (load.get(w.id) ?? 0) + 1);
      picks.push(w.id);
    }
    expect(picks).toEqual(['w1', 'w2', 'w1', 'w2']);
    load.set('w1', 0);
    expect(pickWorker([w2, w1], def, { load: (id) => load.get(id) ?? 0 }).id).toBe('w1');
  });

  it('skips excluded workers (one a build just lost)', () => {
    const w1 = worker('w1', ['linux/amd64']);
    const w2 = worker('w2', ['linux/amd64']);
    expect(pickWorker([w1, w2], [runFor('linux/amd64')], { exclude: new Set(['w1']) }).id).toBe('w2');
    expect(catchErr(() => pickWorker([w1], [runFor('linux/amd64')], { exclude: new Set(['w1']) })).code).toBe('unavailable');
  });

  it('places no op on a worker that does not announce its kind', () => {
    const all = ['exec', 'file', 'merge', 'source:docker-image', 'source:local', 'source:git'];
    const noExec = worker('a-no-exec', ['linux/amd64'], {}, all.filter((k) => k !== 'exec'));
    const noGit = worker('b-no-git', ['linux/amd64'], {}, all.filter((k) => k !== 'source:git'));
    const run = runFor('linux/amd64');
    const gitCopy = parseDefinition(marshal(FileChain.start().copy(git('https://example.com/r.git', 'main'), '/', '/src').apply(State.scratch())));
    expect(pickWorker([noExec, noGit], [run]).id).toBe('b-no-git');
    expect(pickWorker([noGit, noExec], [gitCopy]).id).toBe('a-no-exec');
    // A worker that announced no kinds (older than the announcement) is taken to run them all.
    expect(pickWorker([noExec, worker('c-old', ['linux/amd64'])], [run]).id).toBe('c-old');
  });

  it('fails with failed_precondition naming the op kind, its digest and what each worker runs', () => {
    const noExec = worker('a', ['linux/amd64'], {}, ['file', 'source:docker-image']);
    const run = runFor('linux/amd64');
    const err = catchErr(() => pickWorker([noExec], [run]));
    expect(err.code).toBe('failed_precondition');
    expect(err.message).toBe('no worker runs exec steps (workers run: a: file, source:docker-image)');
    const execDigest = [...run.ops].find(([, o]) => o.op.op.case === 'exec')![0];
    expect(err.details).toMatchObject({ digest: execDigest, opKind: 'exec' });
    // Each kind has a worker, but no one worker runs both.
    const noImage = worker('b', ['linux/amd64'], {}, ['exec', 'file']);
    const both = catchErr(() => pickWorker([noExec, noImage], [run], { filters: parseWorkerFilters(['labels.x!=y']) }));
    expect(both.message).toMatch(/^no one worker matching --worker-filter labels.x!=y runs all of (source:docker-image, exec|exec, source:docker-image) \(workers run: a: file, source:docker-image; b: exec, file\)$/);
    // The platform is checked first: a worker of the wrong platform is not offered for the kind.
    expect(catchErr(() => pickWorker([noExec], [runFor('linux/s390x')])).message).toMatch(/platform linux\/s390x/);
  });

  it('places a build where it is expected to finish first: its work there (ms to run or pull), shared with the builds running there', () => {
    const w1 = worker('w1', ['linux/amd64']);
    const w2 = worker('w2', ['linux/amd64']);
    const w3 = worker('w3', ['linux/amd64']);
    const def = [runFor('linux/amd64')];
    // `work`: per worker, ms of predicted steps to run or pull there, and how many it holds (default: 2000 ms, none held).
    const pick = (load: Record<string, number>, work: Record<string, [number, number]>) =>
      pickWorker([w1, w2, w3], def, { load: (id) => load[id] ?? 0, work: (id) => ({ ms: work[id]?.[0] ?? 2000, held: work[id]?.[1] ?? 0 }) }).id;
    // Idle everywhere: the least work wins, over the lowest id.
    expect(pick({}, { w2: [1000, 1] })).toBe('w2');
    expect(pick({}, { w2: [1000, 1], w3: [0, 3] })).toBe('w3');
    // A build its holder has whole sticks to it while it runs 2 builds more: (200 + 0) × 3 < 200 + 2000.
    expect(pick({ w2: 2 }, { w2: [0, 3] })).toBe('w2');
    // Work to do on the holder too: (200 + 1500) × 2 > 200 + 2000, the idle worker wins.
    expect(pick({ w2: 1 }, { w2: [1500, 1] })).toBe('w1');
    // Equal expected times: the worker holding more of the steps (then the less busy one).
    expect(pick({ w2: 1 }, { w2: [0, 2], w1: [200, 0], w3: [200, 0] })).toBe('w2');
    // No cache anywhere: least busy, then lowest id (as without work).
    expect(pick({ w1: 1 }, {})).toBe('w2');
    expect(pick({}, {})).toBe('w1');
    expect(pickWorker([w1, w2, w3], def, { load: (id) => (id === 'w1' ? 1 : 0) }).id).toBe('w2');
    // The cache never makes a worker fit: a non-fitting holder is not picked.
    const arm = worker('w0-arm', ['linux/arm64']);
    expect(pickWorker([arm, w1], def, { work: (id) => (id === 'w0-arm' ? { ms: 0, held: 9 } : { ms: 5000, held: 0 }) }).id).toBe('w1');
  });

  it('bounds the trade-off: a hot worker holding every build\'s cache gets builds only up to MAX_CACHE_LOAD_GAP beyond the least busy', () => {
    const ws = ['w1', 'w2', 'w3'].map((id) => worker(id, ['linux/amd64']));
    const def = [runFor('linux/amd64')];
    // w1 holds every project whole; each build has 60 s to run anywhere else. Builds arrive and none ends.
    const load = new Map<string, number>();
    const placed: string[] = [];
    for (let i = 0; i < 12; i++) {
      const w = pickWorker(ws, def, { load: (id) => load.get(id) ?? 0, work: (id) => (id === 'w1' ? { ms: 0, held: 5 } : { ms: 60_000, held: 0 }) });
      load.set(w.id, (load.get(w.id) ?? 0) + 1);
      placed.push(w.id);
    }
    // w1 takes the first MAX_CACHE_LOAD_GAP + 1 builds, then runs at most that many more than the others: it never takes them all.
    expect(placed.slice(0, MAX_CACHE_LOAD_GAP + 1)).toEqual(Array(MAX_CACHE_LOAD_GAP + 1).fill('w1'));
    expect(load.get('w1')).toBe(6);
    expect(load.get('w2')).toBe(3);
    expect(load.get('w3')).toBe(3);
    for (let i = 0; i < placed.length; i++) {
      const counts = placed.slice(0, i + 1).reduce((m, id) => m.set(id, (m.get(id) ?? 0) + 1), new Map<string, number>());
      expect((counts.get('w1') ?? 0) - Math.min(counts.get('w2') ?? 0, counts.get('w3') ?? 0)).toBeLessThanOrEqual(MAX_CACHE_LOAD_GAP + 1);
    }
  });

  it('collects the worker constraints of the ops', () => {
    const parsed = runFor('linux/amd64');
    expect(constraintFilters([parsed])).toEqual([]);
    for (const op of parsed.ops.values()) op.op.constraints = create(pb.WorkerConstraintsSchema, { filter: ['labels.pool==a'] });
    expect(constraintFilters([parsed])).toEqual(['labels.pool==a']);
  });
});

describe('parseWorkerFilter', () => {
  const w = { id: 'w1', labels: { pool: 'a', 'org.example.gpu': 'yes' }, platforms: [platform('linux/amd64')] };

  it('matches id, labels (quoted or not) and platforms', () => {
    expect(parseWorkerFilter('id==w1').matches(w)).toBe(true);
    expect(parseWorkerFilter('id!=w1').matches(w)).toBe(false);
    expect(parseWorkerFilter('labels.pool==a').matches(w)).toBe(true);
    expect(parseWorkerFilter('labels."org.example.gpu"==yes').matches(w)).toBe(true);
    expect(parseWorkerFilter('labels.org.example.gpu').matches(w)).toBe(true);
    expect(parseWorkerFilter('labels.missing').matches(w)).toBe(false);
    expect(parseWorkerFilter('platforms==linux/amd64').matches(w)).toBe(true);
    expect(parseWorkerFilter('platforms==linux/arm64').matches(w)).toBe(false);
    expect(parseWorkerFilter('labels.pool==a,id==w2').matches(w)).toBe(false);
  });

  it('rejects malformed filters naming the flag', () => {
    for (const bad of ['', 'pool==a', 'labels.pool=a', 'labels.pool~=(']) {
      const err = catchErr(() => parseWorkerFilter(bad, '--worker-filter'));
      expect(err.code).toBe('invalid_argument');
      expect(err.details.field).toBe('--worker-filter');
      expect(err.message).toContain(`"${bad}"`);
    }
  });
});

function catchErr(fn: () => unknown): KilnError {
  try {
    fn();
  } catch (err) {
    return err as KilnError;
  }
  throw new Error('expected an error');
}
