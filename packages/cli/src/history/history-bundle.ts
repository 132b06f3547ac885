import { create, fromJson, toJson, type JsonValue } from '@bufbuild/protobuf';
import { control } from '@kiln/api';
import { encodeTarHeader, readTarEntries, tarPadding, tarTrailer, TarFormatError } from '@kiln/common';
import { UsageError } from '../flags/usage-error.js';

/**
 * The history bundle `kiln history export` writes and `kiln history import`
 * reads (buildx calls its own `.dockerbuild`). A tar, deterministic: the
 * same builds give the same bytes (entries in the order of index.json,
 * mtime 0, uid/gid 0, mode 0644, JSON with sorted keys). Entries:
 *
 *   index.json                     {"format":"kiln.history.bundle","version":1,"builds":[REF...]}
 *   builds/REF/record.json         the BuildHistoryRecord (protobuf JSON of kiln.control.v1)
 *   builds/REF/events.pb           the kept progress (BuildEvent protobufs, each after a
 *                                  4-byte big-endian length): `history logs` replays it
 *   builds/REF/cache-misses.json   [{vertex,name,reason}]: `history explain`
 *   builds/REF/provenance.json     the SLSA predicate, when the build made one (a copy of the
 *                                  record's `buildx.build.provenance`, for reading; not imported)
 *
 * Reading refuses anything else: other names, links, directories, a REF
 * that is not a build ref, duplicates, entries over their size bound, a
 * record whose ref is not its directory's.
 */
export const BUNDLE_FORMAT = 'kiln.history.bundle';
export const BUNDLE_VERSION = 1;

/** Size bounds of a bundle's entries when read. */
export const BUNDLE_LIMITS = {
  index: 1 << 20,
  record: 16 << 20,
  events: 4 << 20,
  cacheMisses: 16 << 20,
  provenance: 16 << 20,
  builds: 1000,
  total: 2 * 1024 ** 3,
} as const;

const REF = /^[A-Za-z0-9_-]{1,128}$/;
const PROVENANCE_KEY = 'buildx.build.provenance';

/** The bundle's bytes for these builds, in the order given. */
export function encodeHistoryBundle(entries: readonly control.HistoryBundleEntry[]): Buffer {
  const parts: Buffer[] = [];
  const add = (name: string, body: Uint8Array) => {
    parts.push(encodeTarHeader({ name, size: body.length, mode: 0o644, mtime: 0 }), Buffer.from(body), tarPadding(body.length));
  };
  const refs = entries.map((e) => e.record?.ref ?? '');
  add('index.json', json({ builds: refs, format: BUNDLE_FORMAT, version: BUNDLE_VERSION }));
  for (const e of entries) {
    const r = e.record!;
    add(`builds/${r.ref}/record.json`, json(toJson(control.BuildHistoryRecordSchema, r)));
    add(`builds/${r.ref}/events.pb`, e.events);
    add(`builds/${r.ref}/cache-misses.json`, json(e.cacheMisses.map((m) => ({ name: m.name, reason: m.reason, vertex: m.vertex }))));
    const provenance = decodeProvenance(r.exporterResponse[PROVENANCE_KEY]);
    if (provenance !== undefined) add(`builds/${r.ref}/provenance.json`, json(provenance));
  }
  parts.push(tarTrailer());
  return Buffer.concat(parts);
}

/**
 * The builds of a bundle, checked as described above. `file` names the
 * bundle in errors ("-" for stdin): each names it and the entry.
 */
export async function decodeHistoryBundle(chunks: AsyncIterable<Uint8Array>, file: string): Promise<control.HistoryBundleEntry[]> {
  const fail = (entry: string, why: string): never => {
    throw new UsageError(`invalid history bundle ${file}: entry "${entry.slice(0, 300)}": ${why}`, 'FILE');
  };
  let index: { builds: string[] } | undefined;
  const parts = new Map<string, { record?: Buffer; events?: Buffer; misses?: Buffer }>();
  const seen = new Set<string>();
  let total = 0;
  try {
    for await (const { header, body } of readTarEntries(countBytes(chunks, (n) => {
      total += n;
      if (total > BUNDLE_LIMITS.total) fail('(bundle)', `larger than ${BUNDLE_LIMITS.total / 1024 ** 2} MiB`);
    }))) {
      const name = header.name;
      if (header.type !== 'file') fail(name, `a ${header.type}: a bundle holds only regular files`);
      if (seen.has(name)) fail(name, 'appears twice');
      seen.add(name);
      if (name === 'index.json') {
        const raw = await readBody(body, BUNDLE_LIMITS.index, (why) => fail(name, why));
        index = parseIndex(raw, (why) => fail(name, why));
        continue;
      }
      const m = /^builds\/([^/]+)\/(record\.json|events\.pb|cache-misses\.json|provenance\.json)$/.exec(name);
      if (!m) fail(name, 'not a bundle entry (index.json or builds/REF/{record.json,events.pb,cache-misses.json,provenance.json})');
      const [, ref, kind] = m!;
      if (!REF.test(ref!)) fail(name, `"${ref}" is not a build ref`);
      const slot = parts.get(ref!) ?? {};
      parts.set(ref!, slot);
      if (parts.size > BUNDLE_LIMITS.builds) fail(name, `more than ${BUNDLE_LIMITS.builds} builds`);
      const limit = kind === 'record.json' ? BUNDLE_LIMITS.record : kind === 'events.pb' ? BUNDLE_LIMITS.events : kind === 'cache-misses.json' ? BUNDLE_LIMITS.cacheMisses : BUNDLE_LIMITS.provenance;
      const data = await readBody(body, limit, (why) => fail(name, why));
      if (kind === 'record.json') slot.record = data;
      else if (kind === 'events.pb') slot.events = data;
      else if (kind === 'cache-misses.json') slot.misses = data;
      // provenance.json is a readable copy of the record's exporter response: nothing to import from it.
    }
  } catch (err) {
    if (err instanceof TarFormatError) throw new UsageError(`invalid history bundle ${file}: not a tar archive (${err.message})`, 'FILE', { cause: err });
    throw err;
  }
  if (!index) fail('index.json', 'missing: not a Kiln history bundle');
  const listed = new Set(index!.builds);
  for (const ref of parts.keys()) if (!listed.has(ref)) fail(`builds/${ref}/`, 'not listed in index.json');
  return index!.builds.map((ref) => {
    const slot = parts.get(ref);
    const recordName = `builds/${ref}/record.json`;
    if (!slot?.record) return fail(recordName, 'missing (index.json lists the build)');
    let record: control.BuildHistoryRecord;
    try {
      record = fromJson(control.BuildHistoryRecordSchema, JSON.parse(slot.record.toString('utf8')) as JsonValue, { ignoreUnknownFields: true });
    } catch (err) {
      return fail(recordName, `not a build record: ${(err as Error).message}`);
    }
    if (record.ref !== ref) fail(recordName, `holds build "${record.ref.slice(0, 200)}", not ${ref}`);
    const cacheMisses = slot.misses ? parseMisses(slot.misses, (why) => fail(`builds/${ref}/cache-misses.json`, why)) : [];
    return create(control.HistoryBundleEntrySchema, { record, events: slot.events ?? new Uint8Array(0), cacheMisses });
  });
}

function parseIndex(raw: Buffer, fail: (why: string) => never): { builds: string[] } {
  let v: unknown;
  try {
    v = JSON.parse(raw.toString('utf8'));
  } catch (err) {
    return fail(`not JSON: ${(err as Error).message}`);
  }
  const o = v as { format?: unknown; version?: unknown; builds?: unknown };
  if (typeof o !== 'object' || o === null || o.format !== BUNDLE_FORMAT) return fail(`not a Kiln history bundle (format is not "${BUNDLE_FORMAT}")`);
  if (o.version !== BUNDLE_VERSION) return fail(`bundle version ${String(o.version)} is not supported (this kiln reads version ${BUNDLE_VERSION})`);
  if (!Array.isArray(o.builds) || o.builds.some((b) => typeof b !== 'string' || !REF.test(b))) return fail('"builds" must list build refs');
  if (o.builds.length > BUNDLE_LIMITS.builds) return fail(`more than ${BUNDLE_LIMITS.builds} builds`);
  if (new Set(o.builds).size !== o.builds.length) return fail('"builds" lists a build twice');
  return { builds: o.builds as string[] };
}

function parseMisses(raw: Buffer, fail: (why: string) => never): control.CacheMiss[] {
  let v: unknown;
  try {
    v = JSON.parse(raw.toString('utf8'));
  } catch (err) {
    return fail(`not JSON: ${(err as Error).message}`);
  }
  if (!Array.isArray(v)) return fail('must be a JSON array');
  return v.map((m: unknown) => {
    const o = m as Record<string, unknown>;
    if (typeof o !== 'object' || o === null || typeof o.vertex !== 'string' || typeof o.name !== 'string' || typeof o.reason !== 'string') return fail('each entry needs string vertex, name and reason');
    return create(control.CacheMissSchema, { vertex: o.vertex, name: o.name, reason: o.reason });
  });
}

async function readBody(body: AsyncIterable<Buffer>, limit: number, fail: (why: string) => never): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of body) {
    size += c.length;
    if (size > limit) fail(`larger than ${limit} bytes`);
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}

async function* countBytes(chunks: AsyncIterable<Uint8Array>, onBytes: (n: number) => void): AsyncIterable<Uint8Array> {
  for await (const c of chunks) {
    onBytes(c.length);
    yield c;
  }
}

function decodeProvenance(b64: string | undefined): unknown {
  if (!b64) return undefined;
  try {
    return JSON.parse(Buffer.from(b64, 'base64').toString('utf8')) as unknown;
  } catch {
    return undefined;
  }
}

/** JSON with object keys sorted at every level, two-space indented, newline-terminated. */
function json(v: unknown): Buffer {
  return Buffer.from(`${JSON.stringify(sortKeys(v), null, 2)}\n`);
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]));
  return v;
}
