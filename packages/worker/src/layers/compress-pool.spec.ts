import { execFileSync } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { MessageChannel } from 'node:worker_threads';
import { gunzipSync } from 'node:zlib';
import type { LayerPart } from '@kiln/snapshotter';
import { CompressPool, receiveBlob } from './compress-pool.js';
import type { LayerCompression } from './media-types.js';

const MiB = 1 << 20;
const BLOCK = 4 * MiB;
/** Bytes per stored deflate block (RFC 1951: LEN is 16 bits). */
const STORED_MAX = 65535;
const sha = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Deterministic incompressible bytes (AES-CTR keystream of a seed). */
function noise(size: number, seed = 'n'): Buffer {
  const key = createHash('sha256').update(seed).digest().subarray(0, 16);
  return createCipheriv('aes-128-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(size));
}

/** Compressible bytes: text with some variety. */
function text(size: number): Buffer {
  const line = Buffer.from('the quick brown fox jumps over the lazy dog 0123456789\n');
  const out = Buffer.allocUnsafe(size);
  for (let at = 0; at < size; at += line.length) line.copy(out, at, 0, Math.min(line.length, size - at));
  return out;
}

/** Offsets of gzip member headers, found by walking the members' structure (not by searching the bytes). */
function storedMembers(blob: Buffer): { start: number; payload: number }[] {
  const members: { start: number; payload: number }[] = [];
  let at = 0;
  while (at < blob.length) {
    expect(blob.subarray(at, at + 4)).toEqual(Buffer.from([0x1f, 0x8b, 8, 0]));
    const start = at;
    at += 10;
    let payload = 0;
    for (;;) {
      const head = blob[at]!;
      expect((head >> 1) & 3, `member at ${start}: a stored block`).toBe(0);
      const len = blob.readUInt16LE(at + 1);
      expect(blob.readUInt16LE(at + 3)).toBe(len ^ 0xffff);
      at += 5 + len;
      payload += len;
      if (head & 1) break;
    }
    at += 8; // CRC-32, ISIZE
    members.push({ start, payload });
  }
  expect(at).toBe(blob.length);
  return members;
}

describe('CompressPool', () => {
  let dir: string;
  const pools: CompressPool[] = [];
  const pool = (size = 2) => {
    const p = new CompressPool(size);
    pools.push(p);
    return p;
  };

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'kiln-compress-'));
  });
  afterAll(async () => {
    for (const p of pools.splice(0)) await p.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function make(p: CompressPool, parts: LayerPart[], compression: LayerCompression = 'gzip', level = 6) {
    const { port1, port2 } = new MessageChannel();
    const ac = new AbortController();
    const received = (async () => {
      const chunks: Uint8Array[] = [];
      for await (const c of receiveBlob(port1, ac.signal)) chunks.push(c);
      return Buffer.concat(chunks);
    })();
    received.catch(() => undefined);
    const result = await p.run({ parts, compression, level, port: port2 }).catch((err: unknown) => {
      ac.abort(err);
      throw err;
    });
    const blob = await received;
    expect(result.size).toBe(blob.length);
    return { blob, diffId: result.diffId };
  }

  /** The checks every gzip blob must pass: zlib and GNU gzip read it back to the tar, whose hash is the diff id. */
  function expectGzipOf(blob: Buffer, input: Buffer, diffId: string) {
    expect(diffId).toBe(sha(input));
    expect(gunzipSync(blob).equals(input)).toBe(true);
    execFileSync('gzip', ['-t'], { input: blob, maxBuffer: 64 * MiB });
    expect(sha(execFileSync('gzip', ['-dc'], { input: blob, maxBuffer: 64 * MiB }))).toBe(diffId);
  }

  it('round-trips sizes around the member and stored-block boundaries, noise and text, through gunzip and GNU gzip', async () => {
    const p = pool();
    const sizes = [1, STORED_MAX - 1, STORED_MAX, STORED_MAX + 1, 256 << 10, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK + STORED_MAX * 3 + 7];
    for (const size of sizes) {
      for (const data of [noise(size, `s${size}`), text(size)]) {
        const { blob, diffId } = await make(p, [{ kind: 'bytes', data }]);
        expectGzipOf(blob, data, diffId);
      }
    }
  }, 120_000);

  it('stores noise as members of 4 MiB of input in stored blocks of 65535 bytes, each its own valid gzip', async () => {
    const data = noise(2 * BLOCK + 1000);
    const { blob, diffId } = await make(pool(), [{ kind: 'bytes', data }]);
    expectGzipOf(blob, data, diffId);
    const members = storedMembers(blob);
    expect(members.map((m) => m.payload)).toEqual([BLOCK, BLOCK, 1000]);
    // Stored: the framing is all the blob adds (10 + 8 bytes a member, 5 a block).
    expect(blob.length).toBe(data.length + 3 * 18 + 5 * (2 * Math.ceil(BLOCK / STORED_MAX) + 1));
    const second = blob.subarray(members[1]!.start, members[2]!.start);
    expect(gunzipSync(second).equals(data.subarray(BLOCK, 2 * BLOCK))).toBe(true);
  });

  it('mixes stored and deflated members in one stream, and cuts file and byte parts at the same 4 MiB offsets', async () => {
    const header = text(512);
    const fileData = Buffer.concat([noise(BLOCK + 300, 'f'), text(BLOCK)]);
    const file = path.join(dir, 'mixed.bin');
    await writeFile(file, fileData);
    const trailer = Buffer.alloc(1024);
    const parts: LayerPart[] = [
      { kind: 'bytes', data: header },
      { kind: 'file', path: file, size: fileData.length },
      { kind: 'bytes', data: trailer },
    ];
    const input = Buffer.concat([header, fileData, trailer]);
    const p = pool();
    const { blob, diffId } = await make(p, parts);
    expectGzipOf(blob, input, diffId);
    // The same tar given as one byte part: the same members, so the same blob.
    const whole = await make(p, [{ kind: 'bytes', data: input }]);
    expect(whole.blob.equals(blob)).toBe(true);
    // Smaller than the input: the text members were deflated.
    expect(blob.length).toBeLessThan(BLOCK + 300 + (1 << 20));
  });

  it('gives one valid member for an empty layer and for a tiny one', async () => {
    const p = pool();
    const empty = await make(p, []);
    expectGzipOf(empty.blob, Buffer.alloc(0), empty.diffId);
    const tiny = await make(p, [{ kind: 'bytes', data: Buffer.from('x') }]);
    expectGzipOf(tiny.blob, Buffer.from('x'), tiny.diffId);
    expect(tiny.blob.subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b]));
  });

  it('makes the same bytes every time, alone or with jobs running next to it, on one thread or two', async () => {
    const data = Buffer.concat([noise(BLOCK + 5000, 'd'), text(BLOCK + 77), noise(3000, 'e')]);
    const one = await make(pool(1), [{ kind: 'bytes', data }]);
    const two = pool(2);
    const [a, b] = await Promise.all([make(two, [{ kind: 'bytes', data }]), make(two, [{ kind: 'bytes', data }])]);
    expect(a.blob.equals(one.blob)).toBe(true);
    expect(b.blob.equals(one.blob)).toBe(true);
    expect(a.diffId).toBe(one.diffId);
  });

  it('passes an uncompressed tar through unchanged (the blob is the tar)', async () => {
    const data = Buffer.concat([noise(BLOCK + 1, 'u'), text(100)]);
    const { blob, diffId } = await make(pool(), [{ kind: 'bytes', data }], 'uncompressed', 0);
    expect(blob.equals(data)).toBe(true);
    expect(diffId).toBe(sha(data));
  });

  it('fails the job when a planned file is shorter than planned', async () => {
    const file = path.join(dir, 'short.bin');
    await writeFile(file, 'abc');
    await expect(make(pool(), [{ kind: 'file', path: file, size: 10 }])).rejects.toThrow(/short\.bin shrank while its layer was written/);
  });
});
