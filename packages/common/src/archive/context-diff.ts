/*
 * The incremental context transfer format (`FetchFiles` with `diff`).
 *
 * The worker keeps the last copy of a client directory it received and
 * sends the client that copy's manifest (`encodeContextManifest`). The
 * client walks its directory and answers with a diff stream
 * (`ContextDiffEncoder`): the magic line, then one JSON line per change,
 * each changed file's bytes right after its line, and an end line:
 *
 *   KILNDIFF1\n
 *   {"p":"a/b.txt","t":"f","m":420,"u":0,"g":0,"s":3,"mt":1700000000123.5}\n  + 3 bytes
 *   {"p":"old","d":1}\n                       (deleted, with everything below it)
 *   {"end":1,"n":2}\n
 *
 * An entry is sent when it is new or any of type, mode, uid, gid, size,
 * mtime or link target differs from the manifest; a file entry always
 * carries its content. Everything the manifest lists and the stream does
 * not mention is unchanged.
 */

/** One entry of a directory snapshot, as the client saw it when it was sent. */
export interface ContextEntry {
  /** Slash-separated path relative to the directory (no leading "./"). */
  path: string;
  type: 'file' | 'dir' | 'symlink';
  /** Permission bits (with setuid/setgid/sticky). */
  mode: number;
  uid: number;
  gid: number;
  /** Bytes of a file; 0 otherwise. */
  size: number;
  /** The client's mtime in ms (fractional), compared exactly. */
  mtimeMs: number;
  /** Symlink target as stored. */
  linkname: string;
}

export const CONTEXT_DIFF_MAGIC = 'KILNDIFF1\n';

const TYPE_CODE = { file: 'f', dir: 'd', symlink: 'l' } as const;
const CODE_TYPE: Record<string, ContextEntry['type']> = { f: 'file', d: 'dir', l: 'symlink' };

/** The manifest sent to the client: a JSON array of `[path, type, mode, uid, gid, size, mtimeMs, linkname]`. */
export function encodeContextManifest(entries: Iterable<ContextEntry>): Uint8Array {
  const rows: unknown[] = [];
  for (const e of entries) rows.push([e.path, TYPE_CODE[e.type], e.mode, e.uid, e.gid, e.size, e.mtimeMs, e.linkname]);
  return Buffer.from(JSON.stringify(rows));
}

/** Parses `encodeContextManifest`'s bytes (empty bytes: an empty manifest). Throws ContextDiffError when malformed. */
export function decodeContextManifest(bytes: Uint8Array): Map<string, ContextEntry> {
  const out = new Map<string, ContextEntry>();
  if (bytes.byteLength === 0) return out;
  let rows: unknown;
  try {
    rows = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch {
    throw new ContextDiffError('invalid context manifest: not JSON');
  }
  if (!Array.isArray(rows)) throw new ContextDiffError('invalid context manifest: not an array');
  for (const row of rows) {
    if (!Array.isArray(row) || row.length !== 8) throw new ContextDiffError('invalid context manifest row');
    const [path, t, mode, uid, gid, size, mtimeMs, linkname] = row as unknown[];
    const e = checkEntry({ p: path, t, m: mode, u: uid, g: gid, s: size, mt: mtimeMs, l: linkname });
    out.set(e.path, e);
  }
  return out;
}

/** Whether the client must send `e` given the manifest's entry for its path. */
export function contextEntryChanged(e: ContextEntry, base: ContextEntry | undefined): boolean {
  return (
    !base ||
    base.type !== e.type ||
    base.mode !== e.mode ||
    base.uid !== e.uid ||
    base.gid !== e.gid ||
    base.size !== e.size ||
    base.mtimeMs !== e.mtimeMs ||
    base.linkname !== e.linkname
  );
}

export class ContextDiffError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ContextDiffError';
  }
}

/** Encodes the lines of a diff stream; the caller sends file bodies right after their entry line. */
export const ContextDiffEncoder = {
  magic(): Uint8Array {
    return Buffer.from(CONTEXT_DIFF_MAGIC);
  },
  entry(e: ContextEntry): Uint8Array {
    return Buffer.from(ContextDiffEncoder.entryLine(e));
  },
  /** `entry` as a string: the same JSON, written without an object per entry (numbers and codes need no escaping). */
  entryLine(e: ContextEntry): string {
    const link = e.type === 'symlink' ? `,"l":${JSON.stringify(e.linkname)}` : '';
    return `{"p":${JSON.stringify(e.path)},"t":"${TYPE_CODE[e.type]}","m":${e.mode},"u":${e.uid},"g":${e.gid},"s":${e.type === 'file' ? e.size : 0},"mt":${JSON.stringify(e.mtimeMs)}${link}}\n`;
  },
  deletion(path: string): Uint8Array {
    return Buffer.from(`${JSON.stringify({ p: path, d: 1 })}\n`);
  },
  end(changes: number): Uint8Array {
    return Buffer.from(`${JSON.stringify({ end: 1, n: changes })}\n`);
  },
};

/**
 * One change read from a diff stream; read `body` (files) before asking for
 * the next. `inline` is the whole body when it had already arrived (a small
 * file, or none: an empty file, a directory or a link), so a consumer can
 * write it without an await per piece; `body` then yields the same bytes.
 */
export type ContextChange = { kind: 'entry'; entry: ContextEntry; body: AsyncIterable<Buffer>; inline?: Buffer } | { kind: 'delete'; path: string };

const NO_BYTES = Buffer.alloc(0);

/** A body already in memory, as an async iterable (what `body` is when `inline` is set). */
async function* bodyOf(data: Buffer): AsyncGenerator<Buffer> {
  if (data.length > 0) yield data;
}

/** Longest JSON line accepted (a path is at most a few KiB). */
const MAX_LINE = 64 * 1024;

/**
 * Reads a diff stream. Yields each change; throws ContextDiffError when the
 * magic is missing, a line is malformed, a path is not clean and relative,
 * or the stream ends before its end line. Closes `chunks` when done.
 */
export async function* readContextDiff(chunks: AsyncIterable<Uint8Array>): AsyncGenerator<ContextChange> {
  const it = chunks[Symbol.asyncIterator]();
  let buf: Buffer = Buffer.alloc(0);
  let done = false;
  const pull = async (): Promise<boolean> => {
    if (done) return false;
    const r = await it.next();
    if (r.done) {
      done = true;
      return false;
    }
    const c = Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
    buf = buf.length === 0 ? c : Buffer.concat([buf, c]);
    return true;
  };
  /** The next line when it is already buffered (no await), else undefined. */
  const lineNow = (): string | undefined => {
    const nl = buf.indexOf(0x0a);
    if (nl < 0) return undefined;
    const s = buf.toString('utf8', 0, nl);
    buf = buf.subarray(nl + 1);
    return s;
  };
  const line = async (): Promise<string> => {
    for (;;) {
      const nl = buf.indexOf(0x0a);
      if (nl >= 0) {
        const s = buf.subarray(0, nl).toString('utf8');
        buf = buf.subarray(nl + 1);
        return s;
      }
      if (buf.length > MAX_LINE) throw new ContextDiffError('invalid context diff: line too long');
      if (!(await pull())) throw new ContextDiffError('context diff ended early');
    }
  };
  try {
    if ((await line()) !== CONTEXT_DIFF_MAGIC.trimEnd()) throw new ContextDiffError('not a context diff stream (bad magic)');
    let changes = 0;
    for (;;) {
      let rec: Record<string, unknown>;
      try {
        rec = JSON.parse(lineNow() ?? (await line())) as Record<string, unknown>;
      } catch (err) {
        if (err instanceof ContextDiffError) throw err;
        throw new ContextDiffError('invalid context diff: a line is not JSON');
      }
      if (rec === null || typeof rec !== 'object') throw new ContextDiffError('invalid context diff record');
      if (rec.end === 1) {
        if (rec.n !== changes) throw new ContextDiffError(`context diff announced ${String(rec.n)} changes, carried ${changes}`);
        return;
      }
      changes++;
      if (rec.d === 1) {
        yield { kind: 'delete', path: checkPath(rec.p) };
        continue;
      }
      const entry = checkEntry(rec);
      let left = entry.type === 'file' ? entry.size : 0;
      if (left <= buf.length) {
        // The whole body is here (or there is none): no generator per piece, nothing left to skip.
        const inline = left === 0 ? NO_BYTES : buf.subarray(0, left);
        buf = buf.subarray(left);
        yield { kind: 'entry', entry, body: bodyOf(inline), inline };
        continue;
      }
      const body = (async function* () {
        while (left > 0) {
          if (buf.length === 0 && !(await pull())) throw new ContextDiffError(`context diff ended inside ${entry.path}`);
          const take = Math.min(left, buf.length);
          const part = buf.subarray(0, take);
          buf = buf.subarray(take);
          left -= take;
          yield part;
        }
      })();
      yield { kind: 'entry', entry, body };
      // Skip what the consumer left unread.
      for await (const _ of body) void _;
    }
  } finally {
    if (!done) await it.return?.();
  }
}

const BAD_COMPONENT = /(?:^|\/)\.{0,2}(?:\/|$)/;

function checkPath(p: unknown): string {
  // No empty, "." or ".." component (that includes a leading or trailing "/" and "//").
  if (typeof p !== 'string' || p === '' || p.includes('\0') || BAD_COMPONENT.test(p)) {
    throw new ContextDiffError(`invalid path in context diff: ${JSON.stringify(p)}`);
  }
  return p;
}

function checkEntry(rec: Record<string, unknown>): ContextEntry {
  const path = checkPath(rec.p);
  const type = typeof rec.t === 'string' ? CODE_TYPE[rec.t] : undefined;
  const num = (v: unknown, name: string): number => {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new ContextDiffError(`invalid ${name} for ${path} in context diff`);
    return v;
  };
  const finite = (v: unknown, name: string): number => {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new ContextDiffError(`invalid ${name} for ${path} in context diff`);
    return v;
  };
  if (!type) throw new ContextDiffError(`invalid type for ${path} in context diff`);
  const size = num(rec.s, 'size');
  if (!Number.isSafeInteger(size) || (type !== 'file' && size !== 0)) throw new ContextDiffError(`invalid size for ${path} in context diff`);
  const linkname = rec.l ?? '';
  if (typeof linkname !== 'string') throw new ContextDiffError(`invalid link target for ${path} in context diff`);
  return {
    path,
    type,
    mode: num(rec.m, 'mode') & 0o7777,
    uid: num(rec.u, 'uid'),
    gid: num(rec.g, 'gid'),
    size,
    mtimeMs: finite(rec.mt, 'mtime'),
    linkname: type === 'symlink' ? linkname : '',
  };
}
