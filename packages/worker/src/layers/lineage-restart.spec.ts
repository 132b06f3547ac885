import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '@kiln/common';
import { FileChain, local, type State } from '@kiln/llb';
import { createDirectorySnapshotter } from '@kiln/snapshotter';
import { openRetainedRefs } from '../retained-refs.js';
import { createEventCollector, createFakeSession, createMemoryContent, FakeExecutor, solve, type MemoryContent } from '../testing/index.js';
import { createWorker, type Worker } from '../worker.js';

const text = (s: string) => new TextEncoder().encode(s);
const sql = (db: string, query: string) => execFileSync('sqlite3', [db, query]).toString().trim();

describe('layer lineage across a worker restart (same root, real SQLite)', () => {
  let root: string;
  let ctxDir: string;
  let store: MemoryContent;
  let open: Worker[] = [];
  const db = (id = 'w') => path.join(root, id, 'retained-refs.db');

  /** A worker on its root `<root>/<id>`: a restart is a close and a new one on the same root. */
  function start(id = 'w'): Worker {
    const w = createWorker({
      id,
      backend: 'oci',
      snapshotter: createDirectorySnapshotter({ root: path.join(root, id, 'snapshots') }),
      executor: new FakeExecutor(),
      sessions: createFakeSession({ context: { dir: ctxDir } }).client,
      publish: createEventCollector().publish,
      logger: silentLogger(),
      content: store.client,
      stateDir: path.join(root, id),
      retainedRefs: openRetainedRefs(db(id)),
    });
    open.push(w);
    return w;
  }
  async function restart(w: Worker): Promise<Worker> {
    await w.close();
    open = open.filter((x) => x !== w);
    return start();
  }

  beforeEach(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'kiln-lineage-'));
    ctxDir = path.join(root, 'ctx');
    await mkdir(path.join(root, 'w'));
    await mkdir(path.join(root, 'holder'));
    await mkdir(path.join(ctxDir, 'app'), { recursive: true });
    await writeFile(path.join(ctxDir, 'app/old.txt'), 'old\n');
    store = createMemoryContent();
  });
  afterEach(async () => {
    for (const w of open.splice(0)) await w.close();
    await rm(root, { recursive: true, force: true });
  });

  /** context, then two steps, each its own op (and layer). */
  function build(): State {
    const added = FileChain.start().mkfile('/app/new.txt', 0o644, text('new\n')).apply(local('context'), { description: 'ADD new.txt' });
    return FileChain.start().rm('/app/old.txt').apply(added, { description: 'RUN rm old.txt' });
  }

  it('a retained ref keeps one layer per step (same blobs, same history) after the restart', async () => {
    let w = start();
    const ref = (await solve(w, build()))!;
    await w.retain([ref], 'solver-cache');
    const before = await w.getLayers(ref);
    expect(before.map((l) => l.createdBy)).toEqual([undefined, 'ADD new.txt', 'RUN rm old.txt']);

    w = await restart(w);
    const writes = store.writes;
    const after = await w.getLayers(ref);
    expect(after).toEqual(before);
    // The layers were found again, not made again.
    expect(store.writes).toBe(writes);
  });

  it('a chain imported from another worker keeps its blobs and steps after the restart', async () => {
    const holder = start('holder');
    const ref = (await solve(holder, build()))!;
    const chain = await holder.getLayers(ref);
    let w = start();
    const imported = await w.importLayers(chain.map(({ digest, size, mediaType, diffId, createdBy }) => ({ digest, size, mediaType, diffId, ...(createdBy ? { createdBy } : {}) })));
    await w.retain([imported], 'solver-cache');
    const before = await w.getLayers(imported);
    expect(before.map((l) => l.digest)).toEqual(chain.map((l) => l.digest));

    w = await restart(w);
    const after = await w.getLayers(imported);
    expect(after).toEqual(before);
    expect(after.map((l) => [l.fromBase, l.createdBy])).toEqual([
      [false, undefined],
      [false, 'ADD new.txt'],
      [false, 'RUN rm old.txt'],
    ]);
  });

  it('forgets the lineage of removed snapshots (none left once the last ref is dropped)', async () => {
    let w = start();
    const ref = (await solve(w, build()))!;
    await w.retain([ref], 'solver-cache');
    expect(Number(sql(db(), 'SELECT COUNT(*) FROM snapshot_lineage'))).toBeGreaterThanOrEqual(3);
    w = await restart(w);
    await w.drop([ref], 'solver-cache');
    expect(sql(db(), 'SELECT COUNT(*) FROM snapshot_lineage')).toBe('0');
  });

  it('upgrades a database of an older version on open: its refs come back as whole-tree layers, new refs get their lineage', async () => {
    let w = start();
    const old = (await solve(w, build()))!;
    await w.retain([old], 'solver-cache');
    await w.close();
    open = [];
    // What an older worker left: the retentions only, no lineage table, no schema version.
    sql(db(), 'DROP TABLE snapshot_lineage; PRAGMA user_version = 0;');

    w = start();
    expect(sql(db(), 'PRAGMA user_version')).toBe('2');
    const layers = await w.getLayers(old);
    expect(layers).toHaveLength(1);
    expect(layers[0]!.fromBase).toBe(false);
    const fresh = (await solve(w, FileChain.start().mkfile('/more.txt', 0o644, text('more\n')).apply(build(), { description: 'ADD more.txt' })))!;
    await w.retain([fresh], 'solver-cache');
    w = await restart(w);
    expect((await w.getLayers(fresh)).map((l) => l.createdBy)).toEqual([undefined, 'ADD new.txt', 'RUN rm old.txt', 'ADD more.txt']);
  });
});
