import { availableParallelism } from 'node:os';
import { Worker as Thread, type MessagePort } from 'node:worker_threads';
import { CanceledError, KilnError } from '@kiln/common';
import type { LayerPart } from '@kiln/snapshotter';
import type { LayerCompression } from './media-types.js';

/**
 * One layer to make: the tar described by `parts`, compressed and sent
 * through `port` (see `receiveBlob`) as it is made, not staged in a file:
 * the caller streams it straight into the content store, which hashes it.
 */
export interface CompressJob {
  parts: LayerPart[];
  compression: LayerCompression;
  /** Codec level (already defaulted). */
  level: number;
  /** Transferred to the thread; the blob's chunks come out of its other end. */
  port: MessagePort;
}

export interface CompressResult {
  /** sha256 of the uncompressed tar. */
  diffId: string;
  /** Length of the blob sent through the port. */
  size: number;
}

/*
 * The thread's code, evaluated as a CommonJS script with Node built-ins
 * only: a module file would not load from TypeScript sources under the test
 * runner, and the job (read files, hash, compress, write) needs nothing
 * else. It reads the planned files synchronously, hashes the tar (diff id),
 * compresses it with gzip (zlib, in fixed-size members on the thread pool;
 * members that would not shrink are stored) or `zstd` (Debian's CLI, one
 * thread, so the output does not depend on the machine) and posts the blob's
 * chunks to the job's port (big ones transferred, not copied), at most
 * PORT_WINDOW unacknowledged: a slow reader holds the thread back.
 */
const THREAD_SOURCE = String.raw`
const { parentPort } = require('node:worker_threads');
const fs = require('node:fs');
const crypto = require('node:crypto');
const zlib = require('node:zlib');
const { spawn } = require('node:child_process');
const { pipeline } = require('node:stream/promises');
const { Readable, Writable } = require('node:stream');

// The tar in blocks of BLOCK bytes (the last one shorter), each read straight into a buffer of its
// own (no gathering copy; a whole buffer can be transferred to the reader), hashed for the diff id.
const BLOCK = 4 << 20;
function* tarBlocks(parts, diff) {
  let block = Buffer.allocUnsafeSlow(BLOCK);
  let fill = 0;
  const take = () => {
    const full = block;
    diff.update(full);
    block = Buffer.allocUnsafeSlow(BLOCK);
    fill = 0;
    return full;
  };
  for (const p of parts) {
    if (p.kind === 'bytes') {
      const data = p.data;
      let at = 0;
      while (at < data.length) {
        const n = Math.min(data.length - at, BLOCK - fill);
        block.set(data.subarray(at, at + n), fill);
        fill += n;
        at += n;
        if (fill === BLOCK) yield take();
      }
      continue;
    }
    const fd = fs.openSync(p.path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      let left = p.size;
      while (left > 0) {
        const n = fs.readSync(fd, block, fill, Math.min(left, BLOCK - fill), null);
        if (n === 0) throw new Error(p.path + ' shrank while its layer was written');
        left -= n;
        fill += n;
        if (fill === BLOCK) yield take();
      }
    } finally { fs.closeSync(fd); }
  }
  if (fill > 0) {
    // The tail in a buffer of its exact size: a view would carry the whole block along.
    const tail = Buffer.allocUnsafeSlow(fill);
    block.copy(tail, 0, 0, fill);
    diff.update(tail);
    yield tail;
  }
}

// gzip in members of BLOCK input bytes each, up to GZIP_AHEAD compressed at once on the thread
// pool and written in order: one big layer uses every core. Members are cut at fixed offsets of
// the tar, so the bytes never depend on timing or the number of cores; every gzip reader (Go's,
// GNU gzip, zlib's gunzip) reads concatenated members as one stream (RFC 1952).
const GZIP_AHEAD = 4;
// A block that does not compress (random bytes, or files already compressed: archives, media,
// binaries packed by upx) is stored: framed here as deflate's stored blocks (RFC 1951 3.2.4) with
// one copy and a CRC-32, no zlib stream (which copies it twice more in 16 KiB rounds), about as
// big as any level would make it. Whether it compresses is decided from a few samples of the
// block at level 1, so it depends only on the bytes.
const PROBE_SAMPLES = 4;
const PROBE_BYTES = 16 << 10;
const PROBE_MIN_SAVING = 0.03;
function compressible(data) {
  if (data.length < PROBE_SAMPLES * PROBE_BYTES * 2) return true;
  let inBytes = 0;
  let outBytes = 0;
  for (let i = 0; i < PROBE_SAMPLES; i++) {
    const at = Math.floor((data.length - PROBE_BYTES) * i / (PROBE_SAMPLES - 1));
    const sample = data.subarray(at, at + PROBE_BYTES);
    inBytes += sample.length;
    outBytes += zlib.deflateRawSync(sample, { level: 1 }).length;
  }
  return outBytes <= inBytes * (1 - PROBE_MIN_SAVING);
}
// gzip header (RFC 1952 2.3): deflate, no flags, no mtime, XFL 0, OS 3 (Unix, as zlib writes on Linux).
const GZIP_HEADER = Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
const STORED_MAX = 65535;
function storedMember(data) {
  const blocks = Math.max(1, Math.ceil(data.length / STORED_MAX));
  const out = Buffer.allocUnsafeSlow(GZIP_HEADER.length + blocks * 5 + data.length + 8);
  GZIP_HEADER.copy(out, 0);
  let o = GZIP_HEADER.length;
  let at = 0;
  for (let i = 0; i < blocks; i++) {
    const n = Math.min(STORED_MAX, data.length - at);
    out[o] = i === blocks - 1 ? 1 : 0; // BFINAL on the last, BTYPE 00; the rest of the byte is padding
    out.writeUInt16LE(n, o + 1);
    out.writeUInt16LE(n ^ 0xffff, o + 3);
    data.copy(out, o + 5, at, at + n);
    o += 5 + n;
    at += n;
  }
  out.writeUInt32LE(zlib.crc32(data) >>> 0, o);
  out.writeUInt32LE(data.length >>> 0, o + 4);
  return out;
}
// Output rounds of 256 KiB, not zlib's 16 KiB: fewer callbacks and pieces to join (deflate's bytes
// do not depend on the output buffer's size).
const GZIP_OUT_CHUNK = 256 << 10;
async function* gzipMembers(blocks, level) {
  const queue = [];
  const compress = (data) => {
    if (!compressible(data)) return Promise.resolve(storedMember(data));
    const p = new Promise((resolve, reject) => zlib.gzip(data, { level, chunkSize: GZIP_OUT_CHUNK }, (err, out) => (err ? reject(err) : resolve(out))));
    p.catch(() => {}); // awaited in order below; a failure before then is not unhandled
    return p;
  };
  let members = 0;
  for (const block of blocks) {
    queue.push(compress(block));
    members++;
    while (queue.length >= GZIP_AHEAD) yield await queue.shift();
  }
  // One member of the empty input for an empty layer.
  if (members === 0) queue.push(compress(Buffer.alloc(0)));
  while (queue.length > 0) yield await queue.shift();
}

const PORT_WINDOW = 4;
const TRANSFER_MIN = 64 << 10;
function portSink(port) {
  let unacked = 0;
  let wake;
  port.on('message', () => {
    unacked--;
    const w = wake;
    wake = undefined;
    if (w) w();
  });
  const post = (chunk) => {
    unacked++;
    // A buffer that owns its whole ArrayBuffer moves to the reader; a view into a shared one is copied.
    const own = chunk.byteLength >= TRANSFER_MIN && chunk.byteOffset === 0 && chunk.byteLength === chunk.buffer.byteLength;
    const data = new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    port.postMessage({ chunk: data }, own ? [chunk.buffer] : []);
  };
  let size = 0;
  const sink = new Writable({
    highWaterMark: 0,
    write(chunk, _e, cb) {
      if (chunk.length === 0) return cb();
      size += chunk.length;
      if (unacked < PORT_WINDOW) { post(chunk); return cb(); }
      wake = () => { post(chunk); cb(); };
    },
    final(cb) { port.postMessage({ end: true }); cb(); },
  });
  return { sink, size: () => size };
}

async function run(job) {
  const diff = crypto.createHash('sha256');
  const blocks = tarBlocks(job.parts, diff);
  const stream = () => Readable.from(blocks, { objectMode: false, highWaterMark: 1 });
  const { sink, size } = portSink(job.port);
  try {
    if (job.compression === 'gzip') {
      await pipeline(Readable.from(gzipMembers(blocks, job.level), { objectMode: false }), sink);
    } else if (job.compression === 'zstd') {
      const args = ['-q', '-c', '-T1', '--no-progress'];
      if (job.level > 19) args.push('--ultra');
      args.push('-' + job.level);
      const child = spawn('zstd', args, { stdio: ['pipe', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d) => { stderr += d; });
      const exited = new Promise((resolve, reject) => {
        child.on('error', reject);
        child.on('close', (code) => (code === 0 ? resolve() : reject(new Error('zstd exited with ' + code + ': ' + stderr.trim()))));
      });
      await Promise.all([pipeline(stream(), child.stdin), pipeline(child.stdout, sink), exited]);
    } else {
      await pipeline(stream(), sink);
    }
  } finally {
    job.port.close();
  }
  return { diffId: 'sha256:' + diff.digest('hex'), size: size() };
}

parentPort.on('message', (job) => {
  run(job).then(
    (result) => parentPort.postMessage({ ok: true, result }),
    (err) => parentPort.postMessage({ ok: false, error: String((err && err.message) || err) }),
  );
});
`;

interface Slot {
  thread: Thread;
  busy: boolean;
}

/**
 * Compresses layers on worker threads, at most `size` at once (default: the
 * number of cores); more jobs wait their turn. Threads are started on demand
 * and kept for later jobs; idle ones do not keep the process alive. Output
 * is identical whatever the pool size: each job runs alone in one thread.
 */
export class CompressPool {
  private readonly slots: Slot[] = [];
  private readonly waiting: (() => void)[] = [];
  private closed = false;

  constructor(readonly size = availableParallelism()) {}

  async run(job: CompressJob, signal?: AbortSignal): Promise<CompressResult> {
    signal?.throwIfAborted();
    const slot = await this.acquire();
    try {
      return await this.runOn(slot, job, signal);
    } finally {
      this.releaseSlot(slot);
    }
  }

  /** Stops every thread; running jobs fail. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    const threads = this.slots.splice(0).map((s) => s.thread);
    await Promise.all(threads.map((t) => t.terminate()));
  }

  private runOn(slot: Slot, job: CompressJob, signal?: AbortSignal): Promise<CompressResult> {
    return new Promise<CompressResult>((resolve, reject) => {
      const t = slot.thread;
      const cleanup = () => {
        t.off('message', onMessage);
        t.off('error', onError);
        t.off('exit', onExit);
        signal?.removeEventListener('abort', onAbort);
        t.unref();
      };
      const onMessage = (m: { ok: boolean; result?: CompressResult; error?: string }) => {
        cleanup();
        if (m.ok) resolve(m.result!);
        else reject(new KilnError('internal', `failed to make a layer: ${m.error}`));
      };
      const onError = (err: Error) => {
        cleanup();
        this.drop(slot);
        reject(new KilnError('internal', `layer thread failed: ${err.message}`, {}, { cause: err }));
      };
      const onExit = () => {
        cleanup();
        this.drop(slot);
        reject(new KilnError('unavailable', 'layer thread stopped'));
      };
      const onAbort = () => {
        cleanup();
        this.drop(slot);
        void t.terminate();
        reject(new CanceledError('layer compression canceled'));
      };
      t.on('message', onMessage);
      t.on('error', onError);
      t.on('exit', onExit);
      signal?.addEventListener('abort', onAbort, { once: true });
      t.ref();
      t.postMessage(job, [job.port]);
    });
  }

  private async acquire(): Promise<Slot> {
    for (;;) {
      if (this.closed) throw new KilnError('unavailable', 'layer compression pool is closed');
      const idle = this.slots.find((s) => !s.busy);
      if (idle) {
        idle.busy = true;
        return idle;
      }
      if (this.slots.length < this.size) {
        const slot: Slot = { thread: new Thread(THREAD_SOURCE, { eval: true }), busy: true };
        slot.thread.unref();
        this.slots.push(slot);
        return slot;
      }
      await new Promise<void>((r) => this.waiting.push(r));
    }
  }

  private releaseSlot(slot: Slot): void {
    slot.busy = false;
    this.waiting.shift()?.();
  }

  private drop(slot: Slot): void {
    const i = this.slots.indexOf(slot);
    if (i >= 0) this.slots.splice(i, 1);
  }
}

/**
 * The blob a job sends through the other end of its port, as chunks; each
 * is acknowledged when the next is asked for, which lets the thread go on.
 * Ends at the thread's end mark; `signal` (the job failed, or the caller
 * gave up) ends it with an error. Closes the port when done.
 */
export async function* receiveBlob(port: MessagePort, signal: AbortSignal): AsyncGenerator<Uint8Array> {
  const queue: ({ chunk: Uint8Array } | { end: true })[] = [];
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  port.on('message', (m: { chunk: Uint8Array } | { end: true }) => {
    queue.push(m);
    notify();
  });
  signal.addEventListener('abort', notify, { once: true });
  try {
    for (;;) {
      signal.throwIfAborted();
      const m = queue.shift();
      if (!m) {
        await new Promise<void>((r) => (wake = r));
        continue;
      }
      if ('end' in m) return;
      yield m.chunk;
      port.postMessage(0);
    }
  } finally {
    signal.removeEventListener('abort', notify);
    port.close();
  }
}
