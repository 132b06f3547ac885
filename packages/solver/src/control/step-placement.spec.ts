import { execState, FileChain, image, marshal, parseDefinition, type ParsedDefinition } from '@kiln/llb';
import { describe, expect, it } from 'vitest';
import { predictedKeysByDigest } from '../llb/predicted-keys.js';
import type { KeyCost } from './placement-cost.js';
import { placeSteps } from './step-placement.js';

/**
 * FROM base AS a; RUN a1; RUN a2
 * FROM base AS b; RUN b1
 * FROM base; RUN main; COPY --from=a /a /a; COPY --from=b /b /b
 */
function twoStages(): { def: ParsedDefinition; digest: (description: string) => string } {
  const base = image('busybox:1@sha256:' + 'b'.repeat(64));
  const a = execState(execState(base, ['sh', '-c', 'a1'], {}, { description: 'RUN a1' }), ['sh', '-c', 'a2'], {}, { description: 'RUN a2' });
  const b = execState(base, ['sh', '-c', 'b1'], {}, { description: 'RUN b1' });
  const main = execState(base, ['sh', '-c', 'main'], {}, { description: 'RUN main' });
  const withA = FileChain.start().copy(a, '/a', '/a').apply(main, { description: 'COPY --from=a' });
  const withB = FileChain.start().copy(b, '/b', '/b').apply(withA, { description: 'COPY --from=b' });
  const def = parseDefinition(marshal(withB));
  const digest = (description: string) => [...def.ops].find(([, op]) => op.metadata?.description === description)![0] as string;
  return { def, digest };
}

describe('placeSteps', () => {
  const { def, digest } = twoStages();
  const predicted = predictedKeysByDigest(def, undefined);
  const keyOf = (description: string) => predicted.get(digest(description))!;
  // Each held step ran in 1 s; pulling one is expected at 300 ms, and bringing a branch's result to its reader at 150 ms.
  const place = (held: Record<string, string>, load: Record<string, number> = {}, workers = ['w1', 'w2', 'w3']) => {
    const costs = new Map<string, KeyCost>(Object.entries(held).map(([d, holder]) => [keyOf(d), { holder, runMs: 1000, pullMs: 300 }]));
    return placeSteps({ def, buildWorker: 'w1', workers, predicted, costs, moveMs: 150, load: (id) => load[id] ?? 0 });
  };

  it('runs each stage read by COPY --from where its steps are cached, the final chain on the build worker', () => {
    const p = place({ 'RUN a1': 'w2', 'RUN a2': 'w2', 'RUN b1': 'w3' });
    expect(p.get(digest('RUN a1'))).toBe('w2');
    expect(p.get(digest('RUN a2'))).toBe('w2');
    expect(p.get(digest('RUN b1'))).toBe('w3');
    expect(p.get(digest('RUN main'))).toBe('w1');
    expect(p.get(digest('COPY --from=a'))).toBe('w1');
    expect(p.get(digest('COPY --from=b'))).toBe('w1');
    // Sources follow the steps reading them.
    expect([...p.keys()].some((d) => def.ops.get(d as never)!.op.op.case === 'source')).toBe(false);
  });

  it('keeps everything on the build worker in an idle cluster without cache, and spreads stages when that worker is busy', () => {
    expect(new Set(place({}).values())).toEqual(new Set(['w1']));
    const busy = place({}, { w1: 2 });
    expect(busy.get(digest('RUN a2'))).toBe('w2');
    // The first branch placed counts as load: the next goes to the other idle worker.
    expect(busy.get(digest('RUN b1'))).toBe('w3');
    expect(busy.get(digest('RUN main'))).toBe('w1');
  });

  it('trades cache against load: a stage stays with its cache unless that worker is far busier', () => {
    // Held whole on w2: nothing to run there however busy it is (0 × 3 + 150 < 2 × 300 on w1), up to MAX_CACHE_LOAD_GAP builds beyond the least busy.
    expect(place({ 'RUN a1': 'w2', 'RUN a2': 'w2' }, { w2: 2 }).get(digest('RUN a2'))).toBe('w2');
    expect(place({ 'RUN a1': 'w2', 'RUN a2': 'w2' }, { w2: 0, w1: 1 }).get(digest('RUN a2'))).toBe('w2');
    expect(place({ 'RUN a1': 'w2', 'RUN a2': 'w2' }, { w2: 3 }).get(digest('RUN a2'))).toBe('w1');
    // Half held on w2, which runs a build: (1000 + 0) × 2 + 150 > 300 + 1000 on w1 (pull one, run one).
    expect(place({ 'RUN a1': 'w2' }, { w2: 1 }).get(digest('RUN a2'))).toBe('w1');
    // Only workers that fit are used.
    expect(new Set(place({ 'RUN b1': 'w3' }, {}, ['w1', 'w2']).values())).toEqual(new Set(['w1']));
  });
});
