/*
 * A small streaming tar codec (POSIX ustar + pax; GNU long names/links and
 * base-256 numbers are read too) on async iterables of bytes. Kiln owns it
 * instead of using tar-stream: that package's v3 runtime dependencies
 * (streamx, b4a, ...) are not installed in this workspace, and async
 * generators give backpressure for free.
 *
 * Writing: `encodeTarHeader` gives the header block(s) of one entry; the
 * caller sends the body, `tarPadding(size)`, and `tarTrailer()` at the end.
 * Reading: `readTarEntries` parses an archive entry by entry.
 */

export type TarEntryType = 'file' | 'link' | 'symlink' | 'character-device' | 'block-device' | 'directory' | 'fifo' | 'contiguous-file';

export interface TarHeader {
  /**
   * Slash-separated entry path. Read without the trailing slash; the
   * encoder adds it to directories (a name that has it is kept).
   */
  name: string;
  type: TarEntryType;
  /** Permission bits (with setuid/setgid/sticky). */
  mode: number;
  uid: number;
  gid: number;
  /** Body size in bytes (0 for everything but files). */
  size: number;
  /** Unix seconds; whole when written, may be fractional when read from pax. */
  mtime: number;
  /** Symlink target or hard-link source. */
  linkname: string;
  uname: string;
  gname: string;
  devmajor: number;
  devminor: number;
  /** Extended attributes from pax `SCHILY.xattr.NAME` records (read only; raw bytes). */
  xattrs?: Record<string, Buffer>;
}

/**
 * A header to encode; defaults: file, mode 0644 (dirs 0755), ids/mtime/size 0, empty strings.
 * `xattrs` become pax `SCHILY.xattr.NAME` records (raw bytes, names sorted), as GNU tar and Go write them.
 */
export type TarHeaderInit = Partial<TarHeader> & { name: string; xattrs?: Readonly<Record<string, Uint8Array>> };

/** One entry being read; consume `body` before asking for the next entry (or it is skipped). */
export interface TarReadEntry {
  header: TarHeader;
  body: AsyncIterable<Buffer>;
}

export class TarFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TarFormatError';
  }
}

const BLOCK = 512;
const TYPE_FLAGS: Record<string, TarEntryType> = {
  '0': 'file',
  '\0': 'file',
  '1': 'link',
  '2': 'symlink',
  '3': 'character-device',
  '4': 'block-device',
  '5': 'directory',
  '6': 'fifo',
  '7': 'contiguous-file',
};
const FLAG_OF: Record<TarEntryType, string> = {
  file: '0',
  link: '1',
  symlink: '2',
  'character-device': '3',
  'block-device': '4',
  directory: '5',
  fifo: '6',
  'contiguous-file': '7',
};

// ---------------------------------------------------------------- writing

/**
 * The header block(s) of one entry: a pax extended header first when a
 * field does not fit ustar (long path or link, big size or ids), then the
 * ustar header. Deterministic: same input, same bytes.
 */
export function encodeTarHeader(init: TarHeaderInit): Buffer {
  const h = withDefaults(init);
  const pax: [string, string][] = [];
  let name = h.name;
  let prefix = '';
  if (Buffer.byteLength(name) > 100) {
    const split = splitUstarName(name);
    if (split) [prefix, name] = split;
    else {
      pax.push(['path', h.name]);
      name = truncateBytes(h.name, 100);
    }
  }
  let linkname = h.linkname;
  if (Buffer.byteLength(linkname) > 100) {
    pax.push(['linkpath', linkname]);
    linkname = truncateBytes(linkname, 100);
  }
  const numeric = (key: string, v: number, width: number): number => {
    if (v >= 8 ** (width - 1)) {
      pax.push([key, String(v)]);
      return 0;
    }
    return v;
  };
  const size = numeric('size', h.size, 12);
  const uid = numeric('uid', h.uid, 8);
  const gid = numeric('gid', h.gid, 8);
  const mtime = numeric('mtime', Math.max(0, h.mtime), 12);
  const ustar = ustarBlock({ ...h, name, linkname, size, uid, gid, mtime }, prefix, FLAG_OF[h.type]);
  const xattrNames = Object.keys(init.xattrs ?? {}).sort();
  if (pax.length === 0 && xattrNames.length === 0) return ustar;
  const records = Buffer.concat([
    ...pax.map(([k, v]) => paxRecord(k, Buffer.from(v))),
    ...xattrNames.map((n) => paxRecord(`SCHILY.xattr.${n}`, Buffer.from(init.xattrs![n]!))),
  ]);
  const paxName = truncateBytes(`PaxHeaders/${h.name.replace(/\/$/, '').split('/').pop() ?? ''}`, 100);
  const paxHeader = ustarBlock({ ...h, name: paxName, linkname: '', size: records.length, uid, gid, mtime, mode: 0o644 }, '', 'x');
  return Buffer.concat([paxHeader, records, tarPadding(records.length), ustar]);
}

/** Zero bytes that pad a body of `size` bytes to the block size. */
export function tarPadding(size: number): Buffer {
  return Buffer.alloc(paddingSize(size));
}

/** The two zero blocks that end an archive. */
export function tarTrailer(): Buffer {
  return Buffer.alloc(BLOCK * 2);
}

function paddingSize(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

function withDefaults(h: TarHeaderInit): TarHeader {
  const type = h.type ?? 'file';
  return {
    name: type === 'directory' && !h.name.endsWith('/') ? `${h.name}/` : h.name,
    type,
    mode: h.mode ?? (type === 'directory' ? 0o755 : 0o644),
    uid: h.uid ?? 0,
    gid: h.gid ?? 0,
    size: type === 'file' || type === 'contiguous-file' ? (h.size ?? 0) : 0,
    mtime: Math.floor(h.mtime ?? 0),
    linkname: h.linkname ?? '',
    uname: h.uname ?? '',
    gname: h.gname ?? '',
    devmajor: h.devmajor ?? 0,
    devminor: h.devminor ?? 0,
  };
}

function ustarBlock(h: TarHeader, prefix: string, flag: string): Buffer {
  const b = Buffer.alloc(BLOCK);
  b.write(h.name, 0, 100, 'utf8');
  writeOctal(b, h.mode & 0o7777, 100, 8);
  writeOctal(b, h.uid, 108, 8);
  writeOctal(b, h.gid, 116, 8);
  writeOctal(b, h.size, 124, 12);
  writeOctal(b, h.mtime, 136, 12);
  b.write(flag, 156, 1, 'latin1');
  b.write(h.linkname, 157, 100, 'utf8');
  b.write('ustar\u000000', 257, 8, 'latin1');
  b.write(truncateBytes(h.uname, 32), 265, 32, 'utf8');
  b.write(truncateBytes(h.gname, 32), 297, 32, 'utf8');
  writeOctal(b, h.devmajor, 329, 8);
  writeOctal(b, h.devminor, 337, 8);
  b.write(prefix, 345, 155, 'utf8');
  b.fill(' ', 148, 156);
  let sum = 0;
  for (const byte of b) sum += byte;
  b.write(`${sum.toString(8).padStart(6, '0')}\u0000 `, 148, 8, 'latin1');
  return b;
}

function writeOctal(b: Buffer, v: number, off: number, width: number): void {
  b.write(`${Math.floor(v).toString(8).padStart(width - 1, '0')}\u0000`, off, width, 'latin1');
}

/** ustar's prefix/name split at a "/" (prefix <= 155 bytes, name <= 100). */
function splitUstarName(p: string): [string, string] | undefined {
  for (let i = p.indexOf('/'); i >= 0; i = p.indexOf('/', i + 1)) {
    const prefix = p.slice(0, i);
    const name = p.slice(i + 1);
    if (Buffer.byteLength(prefix) > 155) return undefined;
    if (Buffer.byteLength(name) <= 100 && name !== '') return [prefix, name];
  }
  return undefined;
}

function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

function truncateBytes(s: string, max: number): string {
  const b = Buffer.from(s);
  return b.length <= max ? s : b.subarray(0, max).toString('utf8');
}

// ---------------------------------------------------------------- reading

/**
 * Parses a tar stream entry by entry. pax ('x'), global pax ('g') and GNU
 * long name/link ('L', 'K') records are applied to the next entry (global
 * ones to all that follow); names come without their trailing slash, and a
 * file entry whose stored name has one (old archives) is a directory. Ends
 * at the end-of-archive blocks or at a clean EOF between entries, closing
 * `chunks`; a truncated entry, a bad checksum or number, or an unknown
 * entry type throws TarFormatError.
 */
export async function* readTarEntries(chunks: AsyncIterable<Uint8Array>): AsyncGenerator<TarReadEntry> {
  const r = new ByteReader(chunks[Symbol.asyncIterator]());
  let globalPax: Record<string, string> = {};
  let pax: Record<string, string> = {};
  let xattrs: Record<string, Buffer> | undefined;
  let longName: string | undefined;
  let longLink: string | undefined;
  try {
    for (;;) {
      const block = await r.read(BLOCK);
      if (!block || isZero(block)) return;
      checkChecksum(block);
      const flag = String.fromCharCode(block[156]!);
      const size = readNumber(block, 124, 12);
      if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
        const data = await r.readExact(size);
        await r.readExact(paddingSize(size));
        if (flag === 'x') {
          pax = { ...pax, ...parsePax(data) };
          const found = paxXattrs(data);
          if (found) xattrs = { ...xattrs, ...found };
        }
        else if (flag === 'g') globalPax = { ...globalPax, ...parsePax(data) };
        else if (flag === 'L') longName = cString(data);
        else longLink = cString(data);
        continue;
      }
      const attrs = { ...globalPax, ...pax };
      const name = attrs.path ?? longName ?? ustarName(block);
      let type = TYPE_FLAGS[flag];
      if (name.endsWith('/') && (flag === '0' || flag === '\0' || flag === '7')) type = 'directory';
      const ustar = block.subarray(257, 262).toString('latin1') === 'ustar';
      const h: TarHeader = {
        name: name.replace(/\/+$/, ''),
        type: type ?? 'file',
        mode: readNumber(block, 100, 8) & 0o7777,
        uid: attrs.uid !== undefined ? Number(attrs.uid) : readNumber(block, 108, 8),
        gid: attrs.gid !== undefined ? Number(attrs.gid) : readNumber(block, 116, 8),
        size: attrs.size !== undefined ? Number(attrs.size) : size,
        mtime: attrs.mtime !== undefined ? Number(attrs.mtime) : readNumber(block, 136, 12),
        linkname: attrs.linkpath ?? longLink ?? cString(block.subarray(157, 257)),
        uname: attrs.uname ?? cString(block.subarray(265, 297)),
        gname: attrs.gname ?? cString(block.subarray(297, 329)),
        devmajor: ustar ? readNumber(block, 329, 8) : 0,
        devminor: ustar ? readNumber(block, 337, 8) : 0,
        ...(xattrs ? { xattrs } : {}),
      };
      pax = {};
      xattrs = undefined;
      longName = longLink = undefined;
      if (!type) throw new TarFormatError(`unsupported tar entry type "${flag}" for ${h.name}`);
      const bodySize = h.type === 'file' || h.type === 'contiguous-file' ? h.size : 0;
      let consumed = 0;
      const body = (async function* () {
        for await (const part of r.stream(bodySize - consumed)) {
          consumed += part.length;
          yield part;
        }
      })();
      yield { header: h, body };
      // Skip whatever the consumer left unread, then the padding.
      if (consumed < bodySize) for await (const part of r.stream(bodySize - consumed)) consumed += part.length;
      await r.readExact(paddingSize(bodySize));
    }
  } finally {
    await r.close();
  }
}

/** The stored name: ustar's prefix joined to the name field (not for old GNU headers). */
function ustarName(block: Buffer): string {
  const name = cString(block.subarray(0, 100));
  const magic = block.subarray(257, 263).toString('latin1');
  if (magic === 'ustar\u0000') {
    const prefix = cString(block.subarray(345, 500));
    if (prefix) return `${prefix}/${name}`;
  }
  return name;
}

function cString(b: Buffer): string {
  const end = b.indexOf(0);
  return b.subarray(0, end < 0 ? b.length : end).toString('utf8');
}

function readNumber(b: Buffer, off: number, width: number): number {
  const field = b.subarray(off, off + width);
  if (field[0]! & 0x80) {
    // base-256 (GNU): big-endian, first byte's high bit set.
    let v = BigInt(field[0]! & 0x7f);
    for (let i = 1; i < field.length; i++) v = (v << 8n) | BigInt(field[i]!);
    return Number(v);
  }
  const s = field.toString('latin1').replace(/\0.*$/s, '').trim();
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw new TarFormatError(`invalid tar header: bad number "${s}"`);
  return parseInt(s, 8);
}

function checkChecksum(block: Buffer): void {
  const stored = readNumber(block, 148, 8);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : block[i]!;
  if (sum !== stored) throw new TarFormatError('invalid tar header checksum');
}

function parsePax(data: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of paxRecords(data)) out[key] = value.toString('utf8');
  return out;
}

const XATTR_PREFIX = 'SCHILY.xattr.';

/** The `SCHILY.xattr.*` records of a pax header, values as raw bytes (capabilities are binary). */
function paxXattrs(data: Buffer): Record<string, Buffer> | undefined {
  let out: Record<string, Buffer> | undefined;
  for (const [key, value] of paxRecords(data)) {
    if (key.startsWith(XATTR_PREFIX) && key.length > XATTR_PREFIX.length) (out ??= {})[key.slice(XATTR_PREFIX.length)] = value;
  }
  return out;
}

function* paxRecords(data: Buffer): Generator<[string, Buffer]> {
  let i = 0;
  while (i < data.length) {
    const sp = data.indexOf(0x20, i);
    if (sp < 0) break;
    const len = Number(data.subarray(i, sp).toString('latin1'));
    if (!Number.isInteger(len) || len <= 0 || i + len > data.length) throw new TarFormatError('invalid pax record');
    const rec = data.subarray(sp + 1, i + len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq > 0) yield [rec.subarray(0, eq).toString('utf8'), rec.subarray(eq + 1)];
    i += len;
  }
}

function isZero(b: Buffer): boolean {
  for (const byte of b) if (byte !== 0) return false;
  return true;
}

/** Pull-based reads of exact lengths from an async byte iterator. */
class ByteReader {
  private buf: Buffer = Buffer.alloc(0);
  private done = false;

  constructor(private readonly it: AsyncIterator<Uint8Array>) {}

  /** Exactly `n` bytes, or undefined at a clean EOF before any byte; throws on a partial read. */
  async read(n: number): Promise<Buffer | undefined> {
    while (this.buf.length < n && !this.done) await this.pull();
    if (this.buf.length === 0 && n > 0) return undefined;
    if (this.buf.length < n) throw new TarFormatError('unexpected end of tar archive');
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  async readExact(n: number): Promise<Buffer> {
    if (n === 0) return Buffer.alloc(0);
    const b = await this.read(n);
    if (!b) throw new TarFormatError('unexpected end of tar archive');
    return b;
  }

  /** Yields the next `n` bytes in whatever pieces arrive. */
  async *stream(n: number): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      if (this.buf.length === 0) {
        if (this.done) throw new TarFormatError('unexpected end of tar archive');
        await this.pull();
        continue;
      }
      const take = Math.min(left, this.buf.length);
      const out = this.buf.subarray(0, take);
      this.buf = this.buf.subarray(take);
      left -= take;
      yield out;
    }
  }

  async close(): Promise<void> {
    if (!this.done) {
      this.done = true;
      await this.it.return?.();
    }
  }

  private async pull(): Promise<void> {
    const r = await this.it.next();
    if (r.done) {
      this.done = true;
      return;
    }
    const chunk = Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
  }
}
