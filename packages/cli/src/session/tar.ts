/**
 * A small streaming tar codec (POSIX ustar with PAX extensions; GNU long
 * names and base-256 numbers are read too). It is all the session needs:
 * `packEntry` writes the context files a fetch selected and `readTar`
 * parses the archives the daemon writes to local outputs. Both sides work
 * on async iterables of byte chunks, so back-pressure is the caller's loop.
 */

export type TarEntryType = 'file' | 'directory' | 'symlink' | 'link' | 'other';

export interface TarHeader {
  /** Slash-separated path; directories without the trailing slash. */
  name: string;
  type: TarEntryType;
  /** Permission bits (including setuid/setgid/sticky). */
  mode: number;
  /** Seconds since the epoch (may be fractional when read from PAX). */
  mtime: number;
  uid: number;
  gid: number;
  /** Bytes of data that follow (files only). */
  size: number;
  /** Symlink target or hard-link source. */
  linkname: string;
  uname: string;
  gname: string;
}

export interface TarEntry {
  header: TarHeader;
  /**
   * The entry's data. Consume it before asking for the next entry, or it is
   * skipped when the archive iterator advances.
   */
  body: AsyncIterable<Uint8Array>;
}

const BLOCK = 512;
const enc = new TextEncoder();
const dec = new TextDecoder();

/** The two zero blocks that end an archive. */
export function tarTrailer(): Uint8Array {
  return new Uint8Array(BLOCK * 2);
}

/** Zero padding after `size` bytes of entry data. */
export function tarPadding(size: number): Uint8Array {
  const rest = size % BLOCK;
  return new Uint8Array(rest === 0 ? 0 : BLOCK - rest);
}

/**
 * Encodes the header block(s) of one entry: a PAX header first when the
 * name or link target does not fit ustar fields.
 */
export function encodeTarHeader(h: TarHeader): Uint8Array {
  const pax: Record<string, string> = {};
  let name = h.type === 'directory' ? `${h.name}/` : h.name;
  let prefix = '';
  if (enc.encode(name).length > 100) {
    const split = splitUstarName(name);
    if (split) [prefix, name] = split;
    else {
      pax.path = name;
      name = truncateUtf8(name, 100);
    }
  }
  let linkname = h.linkname;
  if (enc.encode(linkname).length > 100) {
    pax.linkpath = linkname;
    linkname = truncateUtf8(linkname, 100);
  }
  const block = ustarBlock({ ...h, name, linkname }, prefix);
  if (Object.keys(pax).length === 0) return block;
  const records = enc.encode(Object.entries(pax).map(([k, v]) => paxRecord(k, v)).join(''));
  const paxHeader = ustarBlock(
    { ...h, type: 'other', name: truncateUtf8(`PaxHeader/${h.name.split('/').pop() ?? ''}`, 100), linkname: '', size: records.length },
    '',
    'x',
  );
  const out = new Uint8Array(BLOCK + records.length + tarPadding(records.length).length + BLOCK);
  out.set(paxHeader, 0);
  out.set(records, BLOCK);
  out.set(block, out.length - BLOCK);
  return out;
}

function ustarBlock(h: TarHeader, prefix: string, typeflag?: string): Uint8Array {
  const b = new Uint8Array(BLOCK);
  writeString(b, 0, 100, h.name);
  writeNumber(b, 100, 8, h.mode & 0o7777);
  writeNumber(b, 108, 8, h.uid);
  writeNumber(b, 116, 8, h.gid);
  writeNumber(b, 124, 12, h.type === 'file' || typeflag === 'x' ? h.size : 0);
  writeNumber(b, 136, 12, Math.max(0, Math.floor(h.mtime)));
  b.fill(0x20, 148, 156);
  b[156] = (typeflag ?? TYPEFLAGS[h.type]).charCodeAt(0);
  writeString(b, 157, 100, h.linkname);
  writeString(b, 257, 6, 'ustar\0');
  writeString(b, 263, 2, '00');
  writeString(b, 265, 32, h.uname);
  writeString(b, 297, 32, h.gname);
  writeString(b, 345, 155, prefix);
  let sum = 0;
  for (const x of b) sum += x;
  writeString(b, 148, 8, `${sum.toString(8).padStart(6, '0')}\0 `);
  return b;
}

// 'other' is written as a FIFO (type 6): no data, skipped by extractors.
const TYPEFLAGS: Record<TarEntryType, string> = { file: '0', link: '1', symlink: '2', directory: '5', other: '6' };

function splitUstarName(name: string): [string, string] | undefined {
  const bytes = enc.encode(name);
  for (let i = name.length - 1; i > 0; i--) {
    if (name[i] !== '/') continue;
    const prefixLen = enc.encode(name.slice(0, i)).length;
    const rest = bytes.length - prefixLen - 1;
    if (prefixLen <= 155 && rest <= 100 && rest > 0) return [name.slice(0, i), name.slice(i + 1)];
    if (rest > 100) return undefined;
  }
  return undefined;
}

function truncateUtf8(s: string, max: number): string {
  let out = s;
  while (enc.encode(out).length > max) out = out.slice(0, -1);
  return out;
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const bodyLen = enc.encode(body).length;
  let len = bodyLen + 1;
  while (String(len).length + bodyLen !== len) len = String(len).length + bodyLen;
  return `${len}${body}`;
}

function writeString(b: Uint8Array, off: number, len: number, s: string): void {
  b.set(enc.encode(s).subarray(0, len), off);
}

function writeNumber(b: Uint8Array, off: number, len: number, n: number): void {
  const digits = len - 1;
  if (n < 8 ** digits) {
    writeString(b, off, len, `${n.toString(8).padStart(digits, '0')}\0`);
    return;
  }
  // GNU base-256: high bit set, big-endian two's complement.
  let v = BigInt(n);
  for (let i = off + len - 1; i > off; i--) {
    b[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  b[off] = 0x80;
}

/**
 * Parses an archive from byte chunks. Throws on a malformed header; stops
 * at the first zero block (or the end of input).
 */
export async function* readTar(chunks: AsyncIterable<Uint8Array>): AsyncGenerator<TarEntry> {
  const input = new ByteReader(chunks);
  let globalPax: Record<string, string> = {};
  let pax: Record<string, string> = {};
  let longName: string | undefined;
  let longLink: string | undefined;
  for (;;) {
    const block = await input.readExact(BLOCK);
    if (block === undefined || block.every((x) => x === 0)) return;
    const raw = parseBlock(block);
    if (raw.typeflag === 'x' || raw.typeflag === 'g' || raw.typeflag === 'L' || raw.typeflag === 'K') {
      const data = await input.readExact(raw.size);
      if (data === undefined) throw new Error('unexpected end of tar archive');
      await input.skip(tarPadding(raw.size).length);
      if (raw.typeflag === 'x') pax = parsePax(data);
      else if (raw.typeflag === 'g') globalPax = { ...globalPax, ...parsePax(data) };
      else if (raw.typeflag === 'L') longName = cString(data);
      else longLink = cString(data);
      continue;
    }
    const attrs = { ...globalPax, ...pax };
    const header: TarHeader = {
      name: (attrs.path ?? longName ?? raw.name).replace(/\/+$/, ''),
      type: raw.type,
      mode: raw.mode,
      mtime: attrs.mtime !== undefined ? Number(attrs.mtime) : raw.mtime,
      uid: attrs.uid !== undefined ? Number(attrs.uid) : raw.uid,
      gid: attrs.gid !== undefined ? Number(attrs.gid) : raw.gid,
      size: attrs.size !== undefined ? Number(attrs.size) : raw.size,
      linkname: attrs.linkpath ?? longLink ?? raw.linkname,
      uname: attrs.uname ?? raw.uname,
      gname: attrs.gname ?? raw.gname,
    };
    pax = {};
    longName = undefined;
    longLink = undefined;
    // Only regular files (and unknown types) carry data.
    const size = header.type === 'file' || header.type === 'other' ? header.size : 0;
    let remaining = size;
    const body = (async function* () {
      while (remaining > 0) {
        const piece = await input.readSome(remaining);
        if (piece === undefined) throw new Error('unexpected end of tar archive');
        remaining -= piece.length;
        yield piece;
      }
    })();
    yield { header, body };
    while (remaining > 0) {
      const piece = await input.readSome(remaining);
      if (piece === undefined) throw new Error('unexpected end of tar archive');
      remaining -= piece.length;
    }
    await input.skip(tarPadding(size).length);
  }
}

interface RawHeader {
  name: string;
  typeflag: string;
  type: TarEntryType;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  linkname: string;
  uname: string;
  gname: string;
}

function parseBlock(b: Uint8Array): RawHeader {
  let stored = 0;
  for (let i = 0; i < BLOCK; i++) stored += i >= 148 && i < 156 ? 0x20 : b[i]!;
  const want = readNumber(b, 148, 8);
  if (want !== stored) throw new Error('invalid tar header: checksum mismatch');
  const typeflag = String.fromCharCode(b[156]!);
  const magic = cString(b.subarray(257, 263));
  let name = cString(b.subarray(0, 100));
  if (magic.startsWith('ustar')) {
    const prefix = cString(b.subarray(345, 500));
    if (prefix !== '' && magic === 'ustar') name = `${prefix}/${name}`;
  }
  const type: TarEntryType =
    typeflag === '0' || typeflag === '\0' || typeflag === '7'
      ? name.endsWith('/') ? 'directory' : 'file'
      : typeflag === '1' ? 'link'
      : typeflag === '2' ? 'symlink'
      : typeflag === '5' ? 'directory'
      : 'other';
  return {
    name,
    typeflag,
    type,
    mode: readNumber(b, 100, 8),
    uid: readNumber(b, 108, 8),
    gid: readNumber(b, 116, 8),
    size: readNumber(b, 124, 12),
    mtime: readNumber(b, 136, 12),
    linkname: cString(b.subarray(157, 257)),
    uname: cString(b.subarray(265, 297)),
    gname: cString(b.subarray(297, 329)),
  };
}

function readNumber(b: Uint8Array, off: number, len: number): number {
  if (b[off]! & 0x80) {
    let v = BigInt(b[off]! & 0x7f);
    for (let i = off + 1; i < off + len; i++) v = (v << 8n) | BigInt(b[i]!);
    return Number(v);
  }
  const s = dec.decode(b.subarray(off, off + len)).replace(/\0.*$/s, '').trim();
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw new Error(`invalid tar header: bad number "${s}"`);
  return parseInt(s, 8);
}

function cString(b: Uint8Array): string {
  const end = b.indexOf(0);
  return dec.decode(end < 0 ? b : b.subarray(0, end));
}

function parsePax(data: Uint8Array): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < data.length) {
    const sp = data.indexOf(0x20, i);
    if (sp < 0) break;
    const len = Number(dec.decode(data.subarray(i, sp)));
    if (!Number.isInteger(len) || len <= 0 || i + len > data.length) throw new Error('invalid tar PAX header');
    const record = dec.decode(data.subarray(sp + 1, i + len - 1));
    const eq = record.indexOf('=');
    if (eq > 0) out[record.slice(0, eq)] = record.slice(eq + 1);
    i += len;
  }
  return out;
}

/** Reads exact or partial byte counts from an async iterable of chunks. */
class ByteReader {
  readonly #it: AsyncIterator<Uint8Array>;
  #buf: Uint8Array = new Uint8Array(0);
  #done = false;

  constructor(chunks: AsyncIterable<Uint8Array>) {
    this.#it = chunks[Symbol.asyncIterator]();
  }

  async #fill(): Promise<boolean> {
    while (this.#buf.length === 0 && !this.#done) {
      const r = await this.#it.next();
      if (r.done) this.#done = true;
      else this.#buf = r.value;
    }
    return this.#buf.length > 0;
  }

  /** Up to `max` bytes (at least one), or undefined at the end. */
  async readSome(max: number): Promise<Uint8Array | undefined> {
    if (!(await this.#fill())) return undefined;
    const n = Math.min(max, this.#buf.length);
    const out = this.#buf.subarray(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }

  /** Exactly `n` bytes; undefined at a clean end; throws on a short read. */
  async readExact(n: number): Promise<Uint8Array | undefined> {
    if (n === 0) return new Uint8Array(0);
    const first = await this.readSome(n);
    if (first === undefined) return undefined;
    if (first.length === n) return first;
    const out = new Uint8Array(n);
    out.set(first, 0);
    let have = first.length;
    while (have < n) {
      const piece = await this.readSome(n - have);
      if (piece === undefined) throw new Error('unexpected end of tar archive');
      out.set(piece, have);
      have += piece.length;
    }
    return out;
  }

  async skip(n: number): Promise<void> {
    while (n > 0) {
      const piece = await this.readSome(n);
      if (piece === undefined) return;
      n -= piece.length;
    }
  }
}
