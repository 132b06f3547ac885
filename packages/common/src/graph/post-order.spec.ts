import { describe, expect, it } from 'vitest';
import { walkPostOrder } from './post-order.js';

describe('walkPostOrder', () => {
  it('visits children before parents, each node once, in child order', () => {
    const g: Record<string, string[]> = { a: ['b', 'c'], b: ['d'], c: ['d'], d: [] };
    const seen: string[] = [];
    walkPostOrder(['a'], (n) => n, (n) => g[n]!, (n) => seen.push(n));
    expect(seen).toEqual(['d', 'b', 'c', 'a']);
  });

  it('walks a chain of 100,000 nodes without overflowing the call stack', () => {
    const n = 100_000;
    const order: number[] = [];
    walkPostOrder([n - 1], String, (i) => (i > 0 ? [i - 1] : []), (i) => order.push(i));
    expect(order).toEqual(Array.from({ length: n }, (_, i) => i));
  });

  it('reports a cycle through onCycle', () => {
    const g: Record<string, string[]> = { a: ['b'], b: ['c'], c: ['a'] };
    expect(() => walkPostOrder(['a'], (n) => n, (n) => g[n]!, () => {}, (n) => {
      throw new Error(`cycle at ${n}`);
    })).toThrow('cycle at a');
  });
});
