import { create } from '@bufbuild/protobuf';
import { llb as pb } from '@kiln/api';
import type { KilnError } from '@kiln/common';
import { execState, FileChain, image, marshal, parseDefinition, State, type ParsedDefinition } from '@kiln/llb';
import { describe, expect, it } from 'vitest';
import { constraintFilters, pickWorker } from './pick-worker.js';
import { parseWorkerFilter, parseWorkerFilters } from './worker-filter.js';
import type { WorkerHandle } from './workers.js';

const platform = (s: string) => {
  const [os, architecture, variant] = s.split('/');
  return create(pb.PlatformSchema, { os, architecture, variant: variant ?? '' });
};

function worker(id: string, platforms: string[], labels: Record<string, string> = {}): WorkerHandle {
  return { id, platforms: platforms.map(platform), labels, client: {} as WorkerHandle['client'] };
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
