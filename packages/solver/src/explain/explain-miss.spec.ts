import { describe, expect, it } from 'vitest';
import { describeEnvChange, describeFilesChange, explainMiss, FIRST_BUILD, matchStep, type PreviousBuild } from './explain-miss.js';
import type { StepRecord } from './step-record.js';

function step(p: Partial<StepRecord> & { digest: string }): StepRecord {
  return {
    key: `key-${p.digest}`,
    name: p.digest,
    kind: 'exec',
    position: `Dockerfile:3-3:exec`,
    line: 'RUN make',
    platform: 'linux/amd64',
    fields: 'f1',
    inputs: [],
    parents: [],
    reads: [],
    noCache: false,
    worker: 'w1',
    cached: false,
    ...p,
  };
}

function prevOf(...steps: StepRecord[]): PreviousBuild {
  return { ref: 'old', steps: new Map(steps.map((s) => [s.digest, s])) };
}

const ctxOld = step({ digest: 'ctx1', key: '', kind: 'source', position: 'op:source:context', line: '', source: 'local://context', files: { 'a.txt': 'sha256:1', 'b.txt': 'sha256:2' } });
const ctxNew = { ...ctxOld, digest: 'ctx2', files: { 'a.txt': 'sha256:9', 'b.txt': 'sha256:2', 'c.txt': 'sha256:3' } };
const imgOld = step({ digest: 'img1', kind: 'source', position: 'Dockerfile:1-1:source', line: 'FROM busybox', source: 'docker-image://localhost:5000/busybox:latest@sha256:aaa' });

describe('explainMiss', () => {
  it('says a step without an earlier build, or without a match in it, is a first build', () => {
    const cur = step({ digest: 'x' });
    expect(explainMiss(cur, new Map(), undefined, undefined)).toBe(FIRST_BUILD);
    expect(explainMiss(cur, new Map(), prevOf(step({ digest: 'y', position: 'Dockerfile:9-9:exec', line: 'RUN other' })), undefined)).toBe(FIRST_BUILD);
  });

  it('names the context files a COPY reads that changed, not the ones it does not read', () => {
    const oldCopy = step({ digest: 'cp1', kind: 'file', position: 'Dockerfile:2-2:file', line: 'COPY a.txt /', inputs: ['k-img', 'sum1'], parents: ['img1', 'ctx1'], reads: [null, ['/a.txt']] });
    const cur = { ...oldCopy, digest: 'cp2', inputs: ['k-img', 'sum2'], parents: ['img1', 'ctx2'] };
    const current = new Map([['ctx2', ctxNew]]);
    expect(explainMiss(cur, current, prevOf(ctxOld, imgOld, oldCopy), undefined)).toBe('context files changed: a.txt (changed)');
    // A COPY of everything lists every change.
    const all = { ...cur, reads: [null, ['/']] };
    expect(explainMiss(all, current, prevOf(ctxOld, imgOld, { ...oldCopy, reads: [null, ['/']] }), undefined)).toBe('context files changed: a.txt (changed), c.txt (added)');
  });

  it('names the build arg that changed and hides secret-looking values', () => {
    const old = step({ digest: 'r1', env: ['PATH=/bin', 'VERSION=1', 'API_TOKEN=abc'] });
    const cur = step({ digest: 'r2', fields: 'f2', env: ['PATH=/bin', 'VERSION=2', 'API_TOKEN=def'] });
    const out = explainMiss(cur, new Map(), prevOf(old), undefined);
    expect(out).toBe('build arg or ENV changed: VERSION: "1" → "2", API_TOKEN changed (value hidden)');
    expect(out).not.toContain('def');
  });

  it('names the base image digest that moved', () => {
    const cur = { ...imgOld, digest: 'img2', fields: 'f9', source: 'docker-image://localhost:5000/busybox:latest@sha256:bbb' };
    expect(explainMiss(cur, new Map(), prevOf(imgOld), undefined)).toBe('base image localhost:5000/busybox:latest: sha256:aaa → sha256:bbb');
  });

  it('shows a changed Dockerfile line old → new', () => {
    const old = step({ digest: 'r1', line: 'RUN echo one' });
    const cur = step({ digest: 'r2', line: 'RUN echo two', fields: 'f2' });
    expect(explainMiss(cur, new Map(), prevOf(old), undefined)).toBe('Dockerfile line changed: RUN echo one → RUN echo two');
  });

  it('names the first parent step whose key changed', () => {
    const old = step({ digest: 'r1', inputs: ['k-a'], parents: ['p1'] });
    const parent = step({ digest: 'p2', name: '[2/3] COPY a.txt /' });
    const cur = step({ digest: 'r2', inputs: ['k-b'], parents: ['p2'] });
    expect(explainMiss(cur, new Map([['p2', parent]]), prevOf(old), undefined)).toBe('parent step changed: [2/3] COPY a.txt /');
  });

  it('names --no-cache and --no-cache-filter, a worker and a platform change', () => {
    const s = step({ digest: 'r1' });
    expect(explainMiss({ ...s, noCache: true }, new Map(), prevOf(s), '')).toBe('--no-cache');
    expect(explainMiss({ ...s, noCache: true }, new Map(), prevOf(s), 'build')).toBe('--no-cache-filter build');
    expect(explainMiss({ ...s, worker: 'w2' }, new Map(), prevOf(s), undefined)).toBe('worker changed: w1 → w2');
    expect(explainMiss({ ...s, digest: 'r2', platform: 'linux/arm64' }, new Map(), prevOf(s), undefined)).toBe('platform changed: linux/amd64 → linux/arm64');
  });

  it('says when the inputs are the same and the cache entry is gone', () => {
    const s = step({ digest: 'r1', inputs: ['k'] });
    expect(explainMiss(s, new Map(), prevOf(s), undefined)).toBe('same inputs as build old; its cache entry is gone (pruned)');
  });
});

describe('matchStep', () => {
  it('follows a line that moved (lines inserted above) by its text before its old position', () => {
    const moved = step({ digest: 'a', position: 'Dockerfile:3-3:exec', line: 'RUN make' });
    const other = step({ digest: 'b', position: 'Dockerfile:4-4:exec', line: 'RUN test' });
    const cur = step({ digest: 'c', position: 'Dockerfile:4-4:exec', line: 'RUN make' });
    expect(matchStep(cur, prevOf(moved, other))?.digest).toBe('a');
  });
});

describe('describeFilesChange', () => {
  it('names at most ten files and counts the rest', () => {
    const old: Record<string, string> = {};
    const cur: Record<string, string> = {};
    for (let i = 0; i < 13; i++) cur[`f${String(i).padStart(2, '0')}`] = 'sha256:x';
    const out = describeFilesChange(old, cur, null);
    expect(out).toBe(`context files changed: ${Array.from({ length: 10 }, (_, i) => `f${String(i).padStart(2, '0')} (added)`).join(', ')}, +3 more`);
  });

  it('matches globs and directories of the paths a step reads', () => {
    const out = describeFilesChange({ 'src/a.ts': '1', 'x.md': '1' }, { 'src/a.ts': '2', 'x.md': '2', 'src/b.ts': '1' }, ['/src']);
    expect(out).toBe('context files changed: src/a.ts (changed), src/b.ts (added)');
    expect(describeFilesChange({ 'a.txt': '1', 'b.md': '1' }, { 'a.txt': '2', 'b.md': '2' }, ['/*.txt'])).toBe('context files changed: a.txt (changed)');
  });
});

describe('describeEnvChange', () => {
  it('reports added and removed variables', () => {
    expect(describeEnvChange(['A=1'], ['B=2'])).toBe('build arg or ENV changed: B added: "2", A removed');
    expect(describeEnvChange(['A=1'], ['A=1'])).toBe('');
  });
});
