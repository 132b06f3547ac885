import { fromBinary } from '@bufbuild/protobuf';
import { events, type control } from '@kiln/api';
import { InvalidArgumentError } from '@kiln/common';

/** Bounds on one imported build: past any of them the import is refused, naming the field. */
export interface ImportLimits {
  /** Bytes of kept progress events (the store's own per-build budget). */
  maxEventBytes: number;
}

const FINISHED = new Set(['completed', 'error', 'canceled']);
const MAX_TEXT = 64 << 10;
const MAX_MAP_BYTES = 8 << 20; // exporter response: max-mode provenance holds the whole definition
const MAX_LIST = 64;
const MAX_MISSES = 10_000;

/**
 * Checks a build record another daemon exported before the history keeps
 * it: the bundle comes from outside, so every field is bounded, the ref is
 * one this daemon could have made, the build has ended, and the events
 * blob is a sequence of well-formed BuildEvents inside the per-build
 * budget. Throws InvalidArgumentError naming the offending field.
 */
export function checkImportedBuild(entry: control.HistoryBundleEntry, limits: ImportLimits): control.BuildHistoryRecord {
  const r = entry.record;
  if (!r) throw new InvalidArgumentError('the imported build has no record', 'record');
  if (!/^[A-Za-z0-9_-]{1,128}$/.test(r.ref)) throw new InvalidArgumentError(`invalid build ref "${r.ref.slice(0, 200)}"`, 'record.ref');
  if (!FINISHED.has(r.status)) throw new InvalidArgumentError(`build ${r.ref}: status "${r.status.slice(0, 40)}" is not a finished build's (completed, error or canceled)`, 'record.status');
  if (!r.createdAt) throw new InvalidArgumentError(`build ${r.ref}: no created time`, 'record.created_at');
  for (const [field, t] of [['created_at', r.createdAt], ['completed_at', r.completedAt]] as const) {
    if (t && (t.seconds < 0n || t.seconds > 253402300799n)) throw new InvalidArgumentError(`build ${r.ref}: ${field} out of range`, `record.${field}`);
  }
  for (const [field, v] of [['frontend', r.frontend], ['error', r.error], ['error_code', r.errorCode], ['client', r.client]] as const) {
    if (v.length > MAX_TEXT) throw new InvalidArgumentError(`build ${r.ref}: ${field} longer than ${MAX_TEXT} characters`, `record.${field}`);
  }
  for (const [field, list] of [['exporters', r.exporters], ['workers', r.workers]] as const) {
    if (list.length > MAX_LIST || list.some((v) => v.length > 1024)) throw new InvalidArgumentError(`build ${r.ref}: ${field} has more than ${MAX_LIST} entries or an entry over 1024 characters`, `record.${field}`);
  }
  for (const [field, map] of [['frontend_attrs', r.frontendAttrs], ['exporter_response', r.exporterResponse]] as const) {
    if (JSON.stringify(map).length > MAX_MAP_BYTES) throw new InvalidArgumentError(`build ${r.ref}: ${field} larger than ${MAX_MAP_BYTES >> 20} MiB`, `record.${field}`);
  }
  for (const [field, n] of [['num_total_steps', r.numTotalSteps], ['num_completed_steps', r.numCompletedSteps], ['num_cached_steps', r.numCachedSteps], ['num_warnings', r.numWarnings]] as const) {
    if (n < 0) throw new InvalidArgumentError(`build ${r.ref}: ${field} is negative`, `record.${field}`);
  }
  checkEventsBlob(r.ref, entry.events, limits.maxEventBytes);
  if (entry.cacheMisses.length > MAX_MISSES) throw new InvalidArgumentError(`build ${r.ref}: more than ${MAX_MISSES} cache misses`, 'cache_misses');
  for (const m of entry.cacheMisses) {
    if (m.vertex.length > 200 || m.name.length > MAX_TEXT || m.reason.length > MAX_TEXT) throw new InvalidArgumentError(`build ${r.ref}: a cache miss entry is too long`, 'cache_misses');
  }
  return r;
}

/** Length-prefixed BuildEvents, each one parsed, all within the budget. */
function checkEventsBlob(ref: string, blob: Uint8Array, maxBytes: number): void {
  if (blob.length > maxBytes) throw new InvalidArgumentError(`build ${ref}: ${blob.length} bytes of events, more than the ${maxBytes} kept per build`, 'events');
  const view = Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength);
  for (let off = 0, n = 0; off < view.length; n++) {
    if (off + 4 > view.length) throw new InvalidArgumentError(`build ${ref}: events end inside the length of event ${n}`, 'events');
    const len = view.readUInt32BE(off);
    if (off + 4 + len > view.length) throw new InvalidArgumentError(`build ${ref}: event ${n} claims ${len} bytes past the end of the events`, 'events');
    try {
      const ev = fromBinary(events.BuildEventSchema, view.subarray(off + 4, off + 4 + len));
      if (ev.event.case === undefined) throw new Error('no event in it');
    } catch (err) {
      throw new InvalidArgumentError(`build ${ref}: event ${n} is not a BuildEvent: ${(err as Error).message}`, 'events', { cause: err });
    }
    off += 4 + len;
  }
}
