import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { control, events } from '@kiln/api';
import { InvalidArgumentError, KilnError, NotFoundError } from '@kiln/common';
import type { Database, Statement } from '../cache/sqlite.js';

type BuildEvent = events.BuildEvent;

/** What is known when a build starts. */
export interface HistoryStart {
  ref: string;
  frontend: string;
  frontendAttrs: Readonly<Record<string, string>>;
  exporters: readonly string[];
  createdAtMs: number;
  /** Who asked for it (BuildHistoryRecord.client). */
  client?: string;
}

/** Bytes of progress events kept per build by default (and the most an imported build may bring). */
export const HISTORY_MAX_EVENT_BYTES = 4 << 20;

export interface HistoryStoreOptions {
  /** Finished builds kept; older ones are dropped (default 100). */
  maxEntries?: number;
  /** Bytes of progress events kept per build (default 4 MiB); later log and status events are dropped. */
  maxEventBytes?: number;
  now?: () => number;
}

interface Row {
  ref: string;
  frontend: string;
  attrs: string;
  exporters: string;
  status: string;
  createdMs: number;
  completedMs: number | null;
  totalSteps: number;
  completedSteps: number;
  cachedSteps: number;
  error: string;
  errorCode: string;
  exporterResponse: string;
  warnings: number;
  truncated: number;
  workers: string;
  client: string;
  imported: number;
}

const COLS = `ref, frontend, attrs, exporters, status, created_ms AS createdMs, completed_ms AS completedMs, total_steps AS totalSteps,
  completed_steps AS completedSteps, cached_steps AS cachedSteps, error, error_code AS errorCode, exporter_response AS exporterResponse,
  warnings, truncated, workers, client, imported`;

/**
 * Build history in the solver's SQLite database (table `build_history`): one
 * row per build with its summary and its progress events (vertices, logs,
 * statuses, warnings as length-prefixed BuildEvent protobufs, bounded per
 * build), so `history logs` can replay a build after it ended and after a
 * daemon restart. Builds still "running" when the store opens were cut by a
 * daemon stop and are marked as errors.
 */
export class HistoryStore {
  private readonly maxEntries: number;
  private readonly maxEventBytes: number;
  private readonly now: () => number;
  private readonly stmts: Record<'insert' | 'import' | 'finished' | 'result' | 'worker' | 'finish' | 'get' | 'prefix' | 'list' | 'events' | 'delete' | 'trim', Statement>;

  constructor(private readonly db: Database, opts: HistoryStoreOptions = {}) {
    this.maxEntries = opts.maxEntries ?? 100;
    this.maxEventBytes = opts.maxEventBytes ?? HISTORY_MAX_EVENT_BYTES;
    this.now = opts.now ?? Date.now;
    db.exec(`CREATE TABLE IF NOT EXISTS build_history (
      ref TEXT PRIMARY KEY,
      frontend TEXT NOT NULL,
      attrs TEXT NOT NULL,
      exporters TEXT NOT NULL,
      status TEXT NOT NULL,
      created_ms INTEGER NOT NULL,
      completed_ms INTEGER,
      total_steps INTEGER NOT NULL DEFAULT 0,
      completed_steps INTEGER NOT NULL DEFAULT 0,
      cached_steps INTEGER NOT NULL DEFAULT 0,
      error TEXT NOT NULL DEFAULT '',
      error_code TEXT NOT NULL DEFAULT '',
      exporter_response TEXT NOT NULL DEFAULT '{}',
      warnings INTEGER NOT NULL DEFAULT 0,
      truncated INTEGER NOT NULL DEFAULT 0,
      events BLOB
    )`);
    // Columns added after the table's first release: databases of older daemons gain them empty.
    const cols = new Set((db.prepare('PRAGMA table_info(build_history)').all() as { name: string }[]).map((c) => c.name));
    if (!cols.has('workers')) db.exec(`ALTER TABLE build_history ADD COLUMN workers TEXT NOT NULL DEFAULT '[]'`);
    if (!cols.has('client')) db.exec(`ALTER TABLE build_history ADD COLUMN client TEXT NOT NULL DEFAULT ''`);
    if (!cols.has('imported')) db.exec(`ALTER TABLE build_history ADD COLUMN imported INTEGER NOT NULL DEFAULT 0`);
    this.stmts = {
      insert: db.prepare(`INSERT OR REPLACE INTO build_history (ref, frontend, attrs, exporters, status, created_ms, client) VALUES (?, ?, ?, ?, 'running', ?, ?)`),
      import: db.prepare(
        `INSERT OR IGNORE INTO build_history (ref, frontend, attrs, exporters, status, created_ms, completed_ms, total_steps, completed_steps, cached_steps,
           error, error_code, exporter_response, warnings, truncated, events, workers, client, imported) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)`,
      ),
      finished: db.prepare(`SELECT ref FROM build_history WHERE status != 'running' ORDER BY created_ms DESC, rowid DESC`),
      worker: db.prepare(`UPDATE build_history SET workers = json_insert(workers, '$[#]', ?) WHERE ref = ? AND NOT EXISTS (SELECT 1 FROM json_each(workers) WHERE value = ?)`),
      result: db.prepare('UPDATE build_history SET exporter_response = ? WHERE ref = ?'),
      finish: db.prepare(
        `UPDATE build_history SET status = ?, completed_ms = ?, total_steps = ?, completed_steps = ?, cached_steps = ?, error = ?, error_code = ?,
           warnings = ?, truncated = ?, events = ? WHERE ref = ? AND status = 'running'`,
      ),
      get: db.prepare(`SELECT ${COLS} FROM build_history WHERE ref = ?`),
      prefix: db.prepare(`SELECT ${COLS} FROM build_history WHERE substr(ref, 1, ?) = ? ORDER BY created_ms DESC LIMIT 2`),
      list: db.prepare(`SELECT ${COLS} FROM build_history ORDER BY created_ms DESC, rowid DESC LIMIT ?`),
      events: db.prepare('SELECT events FROM build_history WHERE ref = ?'),
      delete: db.prepare('DELETE FROM build_history WHERE ref = ?'),
      trim: db.prepare(
        `DELETE FROM build_history WHERE status != 'running' AND ref NOT IN
           (SELECT ref FROM build_history WHERE status != 'running' ORDER BY created_ms DESC, rowid DESC LIMIT ?)`,
      ),
    };
    db.prepare(`UPDATE build_history SET status = 'error', error = 'the daemon stopped during the build', error_code = 'unavailable', completed_ms = ? WHERE status = 'running'`).run(this.now());
  }

  /** Records a build as running. */
  start(s: HistoryStart): void {
    this.stmts.insert.run(s.ref, s.frontend, JSON.stringify(s.frontendAttrs), JSON.stringify(s.exporters), s.createdAtMs, s.client ?? '');
  }

  /** Adds a worker the build runs on (once; kept in the order chosen). */
  addWorker(ref: string, workerId: string): void {
    this.stmts.worker.run(workerId, ref, workerId);
  }

  /** Keeps the exporters' response (image digest, names) of a build that is finishing. */
  setExporterResponse(ref: string, response: Readonly<Record<string, string>>): void {
    this.stmts.result.run(JSON.stringify(response), ref);
  }

  /**
   * Ends a running build from its events (the last is the `done` event):
   * status, step counts and kept events. Unknown or already finished refs
   * are ignored (events of builds another solver ran).
   */
  finish(ref: string, buildEvents: readonly BuildEvent[]): void {
    const done = buildEvents.findLast((e) => e.event.case === 'done');
    const doneValue = done?.event.case === 'done' ? done.event.value : undefined;
    const steps = new Map<string, events.Vertex>();
    let warnings = 0;
    for (const ev of buildEvents) {
      if (ev.event.case === 'vertex') steps.set(ev.event.value.digest, mergeVertex(steps.get(ev.event.value.digest), ev.event.value));
      if (ev.event.case === 'warning') warnings++;
    }
    const all = [...steps.values()];
    const status = !doneValue?.error ? 'completed' : doneValue.errorCode === 'canceled' ? 'canceled' : 'error';
    const { blob, truncated } = this.encodeEvents(buildEvents);
    this.db.transaction(() => {
      this.stmts.finish.run(
        status,
        this.now(),
        all.length,
        all.filter((v) => v.completed && !v.error).length,
        all.filter((v) => v.cached).length,
        doneValue?.error ?? '',
        doneValue?.errorCode ?? '',
        warnings,
        truncated ? 1 : 0,
        blob,
        ref,
      );
      this.stmts.trim.run(this.maxEntries);
    })();
  }

  /** Records newest first; `limit` 0 means all. */
  list(limit = 0): control.BuildHistoryRecord[] {
    return (this.stmts.list.all(limit > 0 ? limit : -1) as Row[]).map(toRecord);
  }

  /** The record for a full ref, a unique ref prefix, or the newest build for "". */
  get(ref: string): control.BuildHistoryRecord {
    return toRecord(this.row(ref));
  }

  /** The kept progress events of a build, in order. */
  events(ref: string): BuildEvent[] {
    const row = this.row(ref);
    const { events: blob } = this.stmts.events.get(row.ref) as { events: Buffer | null };
    const out: BuildEvent[] = [];
    if (!blob) return out;
    for (let off = 0; off + 4 <= blob.length; ) {
      const len = blob.readUInt32BE(off);
      out.push(fromBinary(events.BuildEventSchema, blob.subarray(off + 4, off + 4 + len)));
      off += 4 + len;
    }
    return out;
  }

  /** Full refs of every finished build, newest first (`history export --all`). */
  finishedRefs(): string[] {
    return (this.stmts.finished.all() as { ref: string }[]).map((r) => r.ref);
  }

  /**
   * One finished build for `history export`: its record and its kept
   * events as stored (length-prefixed BuildEvent protobufs). A running
   * build cannot be exported: its record is not final yet.
   */
  exportEntry(ref: string): { record: control.BuildHistoryRecord; events: Buffer } {
    const row = this.row(ref);
    if (row.status === 'running') throw new KilnError('failed_precondition', `build ${row.ref} is still running: export it once it ended`, { field: 'REF' });
    const { events: blob } = this.stmts.events.get(row.ref) as { events: Buffer | null };
    return { record: toRecord(row), events: blob ?? Buffer.alloc(0) };
  }

  /**
   * Adds a build another daemon exported (checked by `checkImportedBuild`
   * first), marked as imported. A record with the same ref is kept as it
   * is (importing a bundle twice changes nothing); returns whether it was
   * already there. Imports do not trim: the next finished build does.
   */
  importBuild(record: control.BuildHistoryRecord, eventsBlob: Uint8Array): { alreadyPresent: boolean } {
    const ms = (t: { seconds: bigint; nanos: number } | undefined) => (t ? Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6) : null);
    const res = this.stmts.import.run(
      record.ref,
      record.frontend,
      JSON.stringify(record.frontendAttrs),
      JSON.stringify(record.exporters),
      record.status,
      ms(record.createdAt),
      ms(record.completedAt),
      record.numTotalSteps,
      record.numCompletedSteps,
      record.numCachedSteps,
      record.error,
      record.errorCode,
      JSON.stringify(record.exporterResponse),
      record.numWarnings,
      record.logsTruncated ? 1 : 0,
      Buffer.from(eventsBlob),
      JSON.stringify(record.workers),
      record.client,
    );
    return { alreadyPresent: res.changes === 0 };
  }

  /** Deletes records (each ref resolved like `get`); returns the full refs removed. Running builds cannot be deleted. */
  delete(refs: readonly string[]): string[] {
    const rows = refs.map((r) => this.row(r));
    for (const r of rows) {
      if (r.status === 'running') throw new KilnError('failed_precondition', `build ${r.ref} is still running`, { field: 'REF' });
    }
    for (const r of rows) this.stmts.delete.run(r.ref);
    return rows.map((r) => r.ref);
  }

  private row(ref: string): Row {
    if (ref === '') {
      const newest = this.stmts.list.get(1) as Row | undefined;
      if (!newest) throw new NotFoundError('no builds in the history', { field: 'REF' });
      return newest;
    }
    if (!/^[A-Za-z0-9_-]{1,128}$/.test(ref)) throw new InvalidArgumentError(`invalid build ref "${ref}"`, 'REF');
    const exact = this.stmts.get.get(ref) as Row | undefined;
    if (exact) return exact;
    const matches = this.stmts.prefix.all(ref.length, ref) as Row[];
    if (matches.length === 0) throw new NotFoundError(`no build "${ref}" in the history`, { field: 'REF' });
    if (matches.length > 1) throw new InvalidArgumentError(`build ref "${ref}" is ambiguous: give more characters`, 'REF');
    return matches[0]!;
  }

  /** Length-prefixed events; once over the budget only vertex and done events are kept. */
  private encodeEvents(buildEvents: readonly BuildEvent[]): { blob: Buffer; truncated: boolean } {
    const parts: Buffer[] = [];
    let size = 0;
    let truncated = false;
    for (const ev of buildEvents) {
      const bytes = toBinary(events.BuildEventSchema, ev);
      const essential = ev.event.case === 'vertex' || ev.event.case === 'done';
      if (!essential && size + bytes.length + 4 > this.maxEventBytes) {
        truncated = true;
        continue;
      }
      const head = Buffer.alloc(4);
      head.writeUInt32BE(bytes.length);
      parts.push(head, Buffer.from(bytes));
      size += bytes.length + 4;
    }
    return { blob: Buffer.concat(parts), truncated };
  }
}

function mergeVertex(prev: events.Vertex | undefined, next: events.Vertex): events.Vertex {
  if (!prev) return next;
  return create(events.VertexSchema, {
    ...next,
    cached: prev.cached || next.cached,
    started: next.started ?? prev.started,
    completed: next.completed ?? prev.completed,
    error: next.error || prev.error,
  });
}

function toRecord(r: Row): control.BuildHistoryRecord {
  return create(control.BuildHistoryRecordSchema, {
    ref: r.ref,
    frontend: r.frontend,
    frontendAttrs: JSON.parse(r.attrs) as Record<string, string>,
    exporters: JSON.parse(r.exporters) as string[],
    status: r.status,
    createdAt: timestampFromMs(r.createdMs),
    completedAt: r.completedMs === null ? undefined : timestampFromMs(r.completedMs),
    numTotalSteps: r.totalSteps,
    numCompletedSteps: r.completedSteps,
    numCachedSteps: r.cachedSteps,
    error: r.error,
    errorCode: r.errorCode,
    exporterResponse: JSON.parse(r.exporterResponse) as Record<string, string>,
    numWarnings: r.warnings,
    logsTruncated: r.truncated === 1,
    workers: JSON.parse(r.workers) as string[],
    client: r.client,
    imported: r.imported === 1,
  });
}
