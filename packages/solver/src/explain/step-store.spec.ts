import { describe, expect, it } from 'vitest';
import { openSolverDatabase } from '../cache/sqlite.js';
import { HistoryStore } from '../history/history-store.js';
import { BuildExplainer, buildIdentity } from './build-explainer.js';
import { FIRST_BUILD } from './explain-miss.js';
import type { StepRecord } from './step-record.js';
import { StepStore } from './step-store.js';

function step(digest: string, line: string, cached = false): StepRecord {
  return { digest, key: `k-${digest}`, name: `[1/1] ${line}`, kind: 'exec', position: 'Dockerfile:2-2:exec', line, platform: '', fields: line, inputs: [], parents: [], reads: [], noCache: false, worker: 'w', cached };
}

describe('StepStore + BuildExplainer (real SQLite)', () => {
  it('explains against the newest earlier build of the same identity, keeps misses per build and drops them with the history', () => {
    const db = openSolverDatabase(':memory:');
    const history = new HistoryStore(db);
    const store = new StepStore(db);
    const id = buildIdentity({ frontend: 'dockerfile.v0', context: 'ctx-key' });
    const other = buildIdentity({ frontend: 'dockerfile.v0', target: 'test', context: 'ctx-key' });
    for (const ref of ['b1', 'b2', 'b3']) history.start({ ref, frontend: 'dockerfile.v0', frontendAttrs: {}, exporters: [], createdAtMs: 1 });

    const first = new BuildExplainer(store, 'b1', id, undefined);
    expect(first.record(step('s1', 'RUN echo one'))).toBe(FIRST_BUILD);
    first.save();
    // Another target of the same Dockerfile is not "the same build".
    const unrelated = new BuildExplainer(store, 'b2', other, undefined);
    expect(unrelated.record(step('s9', 'RUN echo nine'))).toBe(FIRST_BUILD);
    unrelated.save();

    const second = new BuildExplainer(store, 'b3', id, undefined);
    expect(second.record(step('s2', 'RUN echo two'))).toBe('Dockerfile line changed: RUN echo one → RUN echo two');
    expect(second.record(step('s3', 'RUN cached', true))).toBeUndefined();
    second.save();
    expect(store.misses('b3')).toEqual([{ vertex: 's2', name: '[1/1] RUN echo two', reason: 'Dockerfile line changed: RUN echo one → RUN echo two' }]);

    history.finish('b3', []);
    history.delete(['b3']);
    store.pruneOrphans();
    expect(store.misses('b3')).toEqual([]);
    expect(store.previous(id, 'bX')?.ref).toBe('b1');
  });

  it('drops context file lists, then records, past the per-build bound', () => {
    const db = openSolverDatabase(':memory:');
    const store = new StepStore(db, { maxBytes: 2000 });
    const big = { ...step('ctx', ''), key: '', files: Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`file-${i}`, `sha256:${'0'.repeat(64)}`])) };
    store.save('r', 'id', [big, step('s', 'RUN x')], []);
    const prev = store.previous('id', 'other')!;
    expect(prev.steps.get('ctx')?.files).toBeUndefined();
    expect(prev.steps.get('s')?.line).toBe('RUN x');
  });
});
