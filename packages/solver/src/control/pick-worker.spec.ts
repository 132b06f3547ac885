import { create } from '@bufbuild/protobuf';
import { llb as pb } from '@kiln/api';
import type { KilnError } from '@kiln/common';
import { execState, FileChain, git, image, marshal, parseDefinition, State, type ParsedDefinition } from '@kiln/llb';
import { describe, expect, it } from 'vitest';
import { constraintFilters, pickWorker } from './pick-worker.js';
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

  it('places a build where the most of its steps are cached, traded against load (CACHED_STEPS_PER_BUILD per extra build)', () => {
    const w1 = worker('w1', ['linux/amd64']);
    const w2 = worker('w2', ['linux/amd64']);
    const w3 = worker('w3', ['linux/amd64']);
    const def = [runFor('linux/amd64')];
    const pick = (load: Record<string, number>, cached: Record<string, number>) => pickWorker([w1, w2, w3], def, { load: (id) => load[id] ?? 0, cached: (id) => cached[id] ?? 0 }).id;
    // Idle everywhere: the cache decides, over the lowest id.
    expect(pick({}, { w2: 1 })).toBe('w2');
    expect(pick({}, { w2: 2, w3: 5 })).toBe('w3');
    // One build more than the least busy costs 3 cached steps: 5 - 3 > 0 wins, 3 - 3 = 0 ties and the less busy wins.
    expect(pick({ w2: 1 }, { w2: 5 })).toBe('w2');
    expect(pick({ w2: 1 }, { w2: 3 })).toBe('w1');
    // Two more: 5 - 6 < 0, the idle worker wins; past MAX_CACHE_LOAD_GAP the cache never counts.
    expect(pick({ w2: 2 }, { w2: 5 })).toBe('w1');
    expect(pick({ w2: 3 }, { w2: 1000 })).toBe('w1');
    // All busy: the gap is measured from the least busy fitting worker.
    expect(pick({ w1: 4, w2: 5, w3: 4 }, { w2: 4 })).toBe('w2');
    // No cache anywhere: least busy, then lowest id (as without counts).
    expect(pick({ w1: 1 }, {})).toBe('w2');
    expect(pick({}, {})).toBe('w1');
    // The cache never makes a worker fit: a non-fitting holder is not picked.
    const arm = worker('w0-arm', ['linux/arm64']);
    expect(pickWorker([arm, w1], def, { cached: (id) => (id === 'w0-arm' ? 9 : 0) }).id).toBe('w1');
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
