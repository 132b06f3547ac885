import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { control, events } from '@kiln/api';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openSolverDatabase } from '../cache/sqlite.js';
import { HistoryStore } from './history-store.js';
import { checkImportedBuild } from './import-check.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function dbFile(): string {
  const d = mkdtempSync(join(tmpdir(), 'kiln-history-'));
  dirs.push(d);
  return join(d, 'solver.db');
}

const ev = (buildId: string, event: MessageInitShape<typeof events.BuildEventSchema>['event']) => create(events.BuildEventSchema, { buildId, event });
const vertex = (digest: string, more: MessageInitShape<typeof events.VertexSchema> = {}) =>
  ({ case: 'vertex', value: { digest, name: digest, started: timestampFromMs(1), ...more } }) as const;

function buildEvents(ref: string, opts: { logBytes?: number; error?: string; code?: string } = {}) {
  return [
    ev(ref, vertex('a')),
    ev(ref, vertex('a', { completed: timestampFromMs(2) })),
    ev(ref, vertex('b', { cached: true, completed: timestampFromMs(2) })),
    ev(ref, vertex('c')),
    ev(ref, { case: 'log', value: { vertex: 'c', stream: 1, msg: Buffer.alloc(opts.logBytes ?? 10, 'x') } }),
    ev(ref, { case: 'log', value: { vertex: 'c', stream: 1, msg: Buffer.from('last\n') } }),
    ev(ref, { case: 'warning', value: { short: Buffer.from('careful') } }),
    ev(ref, vertex('c', opts.error ? { completed: timestampFromMs(3), error: opts.error } : { completed: timestampFromMs(3) })),
    ev(ref, { case: 'done', value: { error: opts.error ?? '', errorCode: opts.code ?? '' } }),
  ];
}

describe('HistoryStore (SQLite)', () => {
  it('records a build from start to finish and keeps it across a reopen; a build cut by a stop becomes an error', () => {
    const file = dbFile();
    let db = openSolverDatabase(file);
    let store = new HistoryStore(db, { now: () => 5000 });
    store.start({ ref: 'abc123', frontend: 'dockerfile.v0', frontendAttrs: { filename: 'Dockerfile' }, exporters: ['image'], createdAtMs: 1000 });
    expect(store.get('abc').status).toBe('running');
    store.setExporterResponse('abc123', { 'containerimage.digest': 'sha256:1' });
    store.finish('abc123', buildEvents('abc123'));
    store.start({ ref: 'cut', frontend: '', frontendAttrs: {}, exporters: [], createdAtMs: 2000 });
    db.close();

    db = openSolverDatabase(file);
    store = new HistoryStore(db, { now: () => 9000 });
    const rec = store.get('abc123');
    expect(rec).toMatchObject({
      status: 'completed',
      numTotalSteps: 3,
      numCompletedSteps: 3,
      numCachedSteps: 1,
      numWarnings: 1,
      exporters: ['image'],
      exporterResponse: { 'containerimage.digest': 'sha256:1' },
      frontendAttrs: { filename: 'Dockerfile' },
      logsTruncated: false,
    });
    expect(Number(rec.completedAt!.seconds)).toBe(5);
    expect(store.events('abc123').map((e) => e.event.case)).toEqual(['vertex', 'vertex', 'vertex', 'vertex', 'log', 'log', 'warning', 'vertex', 'done']);
    expect(store.get('')).toMatchObject({ ref: 'cut', status: 'error', error: 'the daemon stopped during the build' });
    db.close();
  });

  it('marks failed and canceled builds, resolves prefixes, refuses ambiguous and unknown refs', () => {
    const db = openSolverDatabase(':memory:');
    const store = new HistoryStore(db);
    for (const [ref, error, code] of [
      ['fail1', 'exit code: 1', 'vertex'],
      ['fail2', 'interrupted', 'canceled'],
    ] as const) {
      store.start({ ref, frontend: '', frontendAttrs: {}, exporters: [], createdAtMs: 1 });
      store.finish(ref, buildEvents(ref, { error, code }));
    }
    expect(store.get('fail1')).toMatchObject({ status: 'error', error: 'exit code: 1', numCompletedSteps: 2 });
    expect(store.get('fail2').status).toBe('canceled');
    expect(() => store.get('fail')).toThrow(/ambiguous/);
    expect(() => store.get('nope')).toThrow(/no build "nope"/);
    expect(() => store.get('../x')).toThrow(/invalid build ref/);
    expect(store.delete(['fail1'])).toEqual(['fail1']);
    expect(store.get('fail').ref).toBe('fail2');
    db.close();
  });

  it('bounds the kept events per build (vertex events stay) and the number of builds', () => {
    const db = openSolverDatabase(':memory:');
    const store = new HistoryStore(db, { maxEventBytes: 4096, maxEntries: 2 });
    store.start({ ref: 'big', frontend: '', frontendAttrs: {}, exporters: [], createdAtMs: 1 });
    store.finish('big', buildEvents('big', { logBytes: 10_000 }));
    const kept = store.events('big');
    expect(store.get('big').logsTruncated).toBe(true);
    expect(kept.filter((e) => e.event.case === 'vertex')).toHaveLength(5);
    expect(kept.some((e) => e.event.case === 'log' && e.event.value.msg.length === 10_000)).toBe(false);
    expect(kept.at(-1)?.event.case).toBe('done');

    for (const [i, ref] of ['r2', 'r3'].entries()) {
      store.start({ ref, frontend: '', frontendAttrs: {}, exporters: [], createdAtMs: 10 + i });
      store.finish(ref, buildEvents(ref));
    }
    expect(store.list().map((r) => r.ref)).toEqual(['r3', 'r2']);
    expect(store.list(1).map((r) => r.ref)).toEqual(['r3']);
    expect(() => store.delete(['big'])).toThrow(/no build/);
    db.close();
  });

  it('keeps who asked for a build and the workers it ran on, once each, in order; an older table gains the columns', () => {
    const file = dbFile();
    // A database from before the columns existed (the table as its first release made it).
    const old = openSolverDatabase(file);
    old.exec(`CREATE TABLE build_history (ref TEXT PRIMARY KEY, frontend TEXT NOT NULL, attrs TEXT NOT NULL, exporters TEXT NOT NULL, status TEXT NOT NULL,
      created_ms INTEGER NOT NULL, completed_ms INTEGER, total_steps INTEGER NOT NULL DEFAULT 0, completed_steps INTEGER NOT NULL DEFAULT 0,
      cached_steps INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '', error_code TEXT NOT NULL DEFAULT '', exporter_response TEXT NOT NULL DEFAULT '{}',
      warnings INTEGER NOT NULL DEFAULT 0, truncated INTEGER NOT NULL DEFAULT 0, events BLOB)`);
    old.prepare(`INSERT INTO build_history (ref, frontend, attrs, exporters, status, created_ms) VALUES ('old1', 'dockerfile.v0', '{}', '[]', 'completed', 1)`).run();
    old.close();
    const store = new HistoryStore(openSolverDatabase(file));
    expect(store.get('old1')).toMatchObject({ workers: [], client: '' });
    store.start({ ref: 'b1', frontend: 'dockerfile.v0', frontendAttrs: {}, exporters: [], createdAtMs: 5, client: 'unix socket' });
    store.addWorker('b1', 'w2');
    store.addWorker('b1', 'w1');
    store.addWorker('b1', 'w2');
    store.finish('b1', buildEvents('b1'));
    expect(store.get('b1')).toMatchObject({ workers: ['w2', 'w1'], client: 'unix socket', status: 'completed' });
  });
  it('exports a finished build as kept and imports it elsewhere marked imported; a hostile record is refused by field', () => {
    const a = new HistoryStore(openSolverDatabase(dbFile()));
    a.start({ ref: 'exp1', frontend: 'dockerfile.v0', frontendAttrs: { target: 't' }, exporters: ['image'], createdAtMs: 1000 });
    expect(() => a.exportEntry('exp1')).toThrow(/still running/);
    a.finish('exp1', buildEvents('exp1'));
    const { record, events: blob } = a.exportEntry('exp1');
    expect(a.finishedRefs()).toEqual(['exp1']);

    const b = new HistoryStore(openSolverDatabase(dbFile()));
    const entry = create(control.HistoryBundleEntrySchema, { record, events: blob });
    expect(b.importBuild(checkImportedBuild(entry, { maxEventBytes: 4 << 20 }), blob)).toEqual({ alreadyPresent: false });
    expect(b.importBuild(record, blob)).toEqual({ alreadyPresent: true });
    const got = b.get('exp1');
    expect(got).toMatchObject({ ref: 'exp1', status: 'completed', imported: true, numTotalSteps: 3, frontendAttrs: { target: 't' } });
    expect(got.completedAt).toEqual(record.completedAt);
    expect(b.events('exp1').filter((e) => e.event.case === 'log')).toHaveLength(2);
    expect(a.get('exp1').imported).toBe(false);

    const refuse = (patch: Partial<control.BuildHistoryRecord>, evs: Uint8Array = blob) =>
      () => checkImportedBuild(create(control.HistoryBundleEntrySchema, { record: { ...record, ...patch }, events: evs }), { maxEventBytes: 4 << 20 });
    expect(refuse({ ref: '../../x' })).toThrow(/invalid build ref/);
    expect(refuse({ status: 'running' })).toThrow(/not a finished build/);
    expect(refuse({ error: 'e'.repeat(70_000) })).toThrow(/error longer than/);
    expect(refuse({ numTotalSteps: -1 })).toThrow(/negative/);
    expect(refuse({}, Buffer.from([0, 0, 0, 50, 1, 2]))).toThrow(/event 0 claims 50 bytes/);
    expect(refuse({}, Buffer.from([0, 0, 0, 2, 0xff, 0xff]))).toThrow(/event 0 is not a BuildEvent/);
    expect(refuse({}, Buffer.alloc((4 << 20) + 1))).toThrow(/more than the 4194304 kept per build/);
  });
});
