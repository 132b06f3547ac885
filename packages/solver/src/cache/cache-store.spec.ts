import { describe, expect, it } from 'vitest';
import { CacheStore } from './cache-store.js';
import { openSolverDatabase } from './sqlite.js';

describe('CacheStore as the cluster cache index', () => {
  it('counts, per worker, how many of a list of keys it holds (a key lives on the worker that last saved it)', () => {
    const db = openSolverDatabase(':memory:');
    const store = new CacheStore(db);
    store.put('k1', 'w1', ['r1'], 'FROM');
    store.put('k2', 'w1', ['r2'], 'RUN a');
    store.put('k3', 'w2', ['r3'], 'RUN b');
    expect(store.countByWorker(['k1', 'k2', 'k3', 'k1', 'missing'])).toEqual(new Map([['w1', 2], ['w2', 1]]));
    // Rebuilt on w2: the record moves (the solver drops w1's copy).
    store.put('k1', 'w2', ['r4'], 'FROM');
    expect(store.countByWorker(['k1', 'k2', 'k3'])).toEqual(new Map([['w1', 1], ['w2', 2]]));
    // Pruned: gone from the index.
    store.delete('k2');
    expect(store.countByWorker(['k1', 'k2', 'k3']).get('w1')).toBeUndefined();
    // More keys than one statement binds at once.
    const many = Array.from({ length: 1200 }, (_, i) => `m${i}`);
    for (const k of many) store.put(k, 'w3', [k], 'step');
    expect(store.countByWorker(many).get('w3')).toBe(1200);
    db.close();
  });

  it('keeps how long a result took to run, and adds the columns to a database made before them (unknown for old rows)', () => {
    const db = openSolverDatabase(':memory:');
    db.exec(`CREATE TABLE cache_records (key TEXT PRIMARY KEY, worker_id TEXT NOT NULL, refs TEXT NOT NULL, description TEXT NOT NULL,
      created_at INTEGER NOT NULL, last_used_at INTEGER NOT NULL, usage_count INTEGER NOT NULL)`);
    db.prepare(`INSERT INTO cache_records VALUES ('old', 'w1', '["r0"]', 'RUN old', 1, 1, 1)`).run();
    const store = new CacheStore(db);
    expect(store.get('old')).toMatchObject({ runMs: null, lease: null });
    store.put('k1', 'w1', ['r1'], 'RUN sleep', { runMs: 1234.4 });
    expect(store.get('k1')?.lease).toBeNull();
    expect(store.get('k1')?.runMs).toBe(1234);
    // Moved to another worker (pulled there): the run time goes with it.
    store.put('k1', 'w2', ['r2'], 'RUN sleep', { runMs: store.get('k1')!.runMs, lease: 'pull-1' });
    expect(store.get('k1')).toMatchObject({ workerId: 'w2', refs: ['r2'], runMs: 1234, lease: 'pull-1', usageCount: 2 });
    new CacheStore(db); // opening again leaves the column as it is
    expect(store.get('k1')?.runMs).toBe(1234);
    db.close();
  });
});
