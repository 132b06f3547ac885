import { describe, expect, it } from 'vitest';
import { BuildState, MAX_LOG_LINES, type StatusUpdate } from './build-state.js';

const ts = (s: number) => ({ seconds: BigInt(s), nanos: 0 });
const empty: StatusUpdate = { vertexes: [], statuses: [], logs: [], warnings: [] };
const vertex = (v: Partial<StatusUpdate['vertexes'][number]> & { digest: string }) => ({ inputs: [], name: '', cached: false, error: '', cacheMiss: '', ...v });
const log = (vertex: string, text: string, stream = 1) => ({ vertex, stream, msg: new TextEncoder().encode(text) });

describe('BuildState', () => {
  it('folds repeated vertex events into one step with its latest state', () => {
    const b = new BuildState();
    b.apply({ ...empty, vertexes: [vertex({ digest: 'a', name: '[1/2] FROM busybox', cached: true }), vertex({ digest: 'b', name: '[2/2] RUN make', inputs: ['a'] })] });
    expect(b.ordered().map((s) => [s.number, s.state])).toEqual([[1, 'cached'], [2, 'pending']]);
    b.apply({ ...empty, vertexes: [vertex({ digest: 'b', name: '[2/2] RUN make', inputs: ['a'], started: ts(10), cacheMiss: 'first build of this step' })] });
    expect(b.steps.get('b')).toMatchObject({ state: 'running', startedMs: 10_000, cacheMiss: 'first build of this step', number: 2 });
    b.apply({ ...empty, vertexes: [vertex({ digest: 'b', name: '[2/2] RUN make', inputs: ['a'], started: ts(10), completed: ts(13) })] });
    expect(b.steps.get('b')).toMatchObject({ state: 'done', completedMs: 13_000, cacheMiss: 'first build of this step' });
    expect(b.hitRatio()).toEqual({ cached: 1, finished: 2 });
    b.apply({ ...empty, vertexes: [vertex({ digest: 'b', started: ts(10), completed: ts(14), error: 'exit code: 2' })] });
    expect(b.steps.get('b')).toMatchObject({ state: 'error', name: '[2/2] RUN make', inputs: ['a'] });
  });

  it('joins log pieces into lines per step, and keeps the newest lines', () => {
    const b = new BuildState();
    b.apply({ ...empty, vertexes: [vertex({ digest: 'a', name: 'x' })], logs: [log('a', 'hel'), log('a', 'lo\nwor'), log('a', 'ld\r\n', 2)] });
    expect(b.logs).toEqual([{ step: 1, stream: 1, text: 'hello' }, { step: 1, stream: 2, text: 'world' }]);
    b.apply({ ...empty, logs: [log('a', 'line\n'.repeat(MAX_LOG_LINES + 10))] });
    expect(b.logs).toHaveLength(MAX_LOG_LINES);
    expect(b.logs[0]!.text).toBe('line');
  });
});
