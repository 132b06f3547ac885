import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { Scheduler, type GraphNode } from './scheduler.js';

function node(key: string, deps: GraphNode<string>[], log: string[], ms = 10): GraphNode<string> {
  return {
    key,
    deps,
    async run(inputs, signal) {
      log.push(`start ${key}`);
      await new Promise((r, j) => {
        const t = setTimeout(r, ms);
        signal.addEventListener('abort', () => (clearTimeout(t), j(signal.reason)), { once: true });
      });
      log.push(`end ${key}`);
      return `${key}(${inputs.join(',')})`;
    },
  };
}

describe('Scheduler', () => {
  it('runs deps first and independent nodes in parallel', async () => {
    const log: string[] = [];
    const a = node('a', [], log, 30);
    const b = node('b', [], log, 30);
    const c = node('c', [a, b], log);
    const s = new Scheduler<string>({ maxParallelism: 4 });
    const sess = s.session(new AbortController().signal);
    expect(await sess.resolve(c)).toBe('c(a(),b())');
    expect(log.slice(0, 2).sort()).toEqual(['start a', 'start b']);
    expect(log.indexOf('start c')).toBeGreaterThan(log.indexOf('end b'));
  });

  it('bounds parallelism', async () => {
    const log: string[] = [];
    const leaves = ['a', 'b', 'c'].map((k) => node(k, [], log, 20));
    const s = new Scheduler<string>({ maxParallelism: 1 });
    const sess = s.session(new AbortController().signal);
    await Promise.all(leaves.map((l) => sess.resolve(l)));
    expect(log).toEqual(['start a', 'end a', 'start b', 'end b', 'start c', 'end c']);
  });

  it('by default starts many independent nodes at once (no small cap: waiting steps need no CPU)', async () => {
    const log: string[] = [];
    const leaves = Array.from({ length: 12 }, (_, i) => node(`n${i}`, [], log, 30));
    const s = new Scheduler<string>();
    const sess = s.session(new AbortController().signal);
    await Promise.all(leaves.map((l) => sess.resolve(l)));
    // Every node started before the first one ended.
    expect(log.slice(0, 12).every((l) => l.startsWith('start '))).toBe(true);
  });

  it('runs a node once for concurrent builds and releases after the last', async () => {
    const log: string[] = [];
    const released: string[] = [];
    const a = node('a', [], log, 20);
    const s = new Scheduler<string>({ release: (r) => void released.push(r) });
    const one = s.session(new AbortController().signal);
    const two = s.session(new AbortController().signal);
    const [r1, r2] = await Promise.all([one.resolve(a), two.resolve(a)]);
    expect(r1).toBe(r2);
    expect(log.filter((l) => l === 'start a')).toHaveLength(1);
    await one.close();
    expect(released).toEqual([]);
    await two.close();
    expect(released).toEqual(['a()']);
  });

  it('cancels a shared node only when every build cancels', async () => {
    const log: string[] = [];
    const a = node('a', [], log, 50);
    const s = new Scheduler<string>();
    const c1 = new AbortController();
    const c2 = new AbortController();
    const p1 = s.session(c1.signal).resolve(a);
    const p2 = s.session(c2.signal).resolve(a);
    c1.abort();
    await expect(p2).resolves.toBe('a()');
    await expect(p1).resolves.toBe('a()');
    const b = node('b', [], log, 200);
    const c3 = new AbortController();
    const p3 = s.session(c3.signal).resolve(b);
    setTimeout(() => c3.abort(), 10);
    await expect(p3).rejects.toThrow();
    expect(log).not.toContain('end b');
  });
});

describe('Scheduler on long chains', () => {
  it('resolves a chain of 20,000 nodes without overflowing the call stack', async () => {
    let prev: GraphNode<number> | undefined;
    for (let i = 0; i < 20_000; i++) {
      const deps = prev ? [prev] : [];
      prev = { key: `n${i}`, deps, run: async (inputs) => (inputs[0] ?? 0) + 1 };
    }
    const sess = new Scheduler<number>({ maxParallelism: 4 }).session(new AbortController().signal);
    expect(await sess.resolve(prev!)).toBe(20_000);
  });

  it('keeps at most one abort listener per build on its signal, and none after close, over many builds', async () => {
    const s = new Scheduler<string>({ maxParallelism: 4 });
    const shared = new AbortController().signal;
    let peak = 0;
    for (let build = 0; build < 50; build++) {
      const sess = s.session(shared);
      const log: string[] = [];
      const leaves = Array.from({ length: 30 }, (_, i) => node(`b${build}-${i}`, [], log, 0));
      const all = Promise.all(leaves.map((l) => sess.resolve(l)));
      peak = Math.max(peak, getEventListeners(shared, 'abort').length);
      await all;
      await sess.close();
    }
    expect(peak).toBe(1);
    expect(getEventListeners(shared, 'abort')).toHaveLength(0);
  });
});
