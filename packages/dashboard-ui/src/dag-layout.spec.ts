import { describe, expect, it } from 'vitest';
import { layoutDag } from './dag-layout.js';

describe('layoutDag', () => {
  it('puts each step one column right of its deepest input, rows in arrival order', () => {
    // base -> copy -> run; context -> copy; base -> other
    const l = layoutDag([
      { id: 'base', inputs: [] },
      { id: 'context', inputs: [] },
      { id: 'copy', inputs: ['base', 'context'] },
      { id: 'other', inputs: ['base'] },
      { id: 'run', inputs: ['copy', 'base'] },
    ]);
    expect(l.nodes).toEqual([
      { id: 'base', depth: 0, row: 0 },
      { id: 'context', depth: 0, row: 1 },
      { id: 'copy', depth: 1, row: 0 },
      { id: 'other', depth: 1, row: 1 },
      { id: 'run', depth: 2, row: 0 },
    ]);
    expect(l.columns).toBe(3);
    expect(l.rows).toBe(2);
    expect(l.edges).toContainEqual({ from: 'context', to: 'copy' });
    expect(l.edges).toHaveLength(5);
  });

  it('ignores inputs not reported yet, survives a cycle and a chain of 20,000 steps', () => {
    expect(layoutDag([{ id: 'a', inputs: ['missing'] }]).nodes).toEqual([{ id: 'a', depth: 0, row: 0 }]);
    const cyc = layoutDag([{ id: 'a', inputs: ['b'] }, { id: 'b', inputs: ['a'] }]);
    expect(cyc.nodes).toHaveLength(2);
    const chain = Array.from({ length: 20_000 }, (_, i) => ({ id: `s${i}`, inputs: i ? [`s${i - 1}`] : [] }));
    const l = layoutDag(chain.reverse());
    expect(l.columns).toBe(20_000);
    expect(l.nodes.find((n) => n.id === 's19999')!.depth).toBe(19_999);
  });
});
