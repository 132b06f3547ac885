import { availableParallelism } from 'node:os';
import { Worker as Thread } from 'node:worker_threads';
import { CanceledError, KilnError } from '@kiln/common';
import type { LayerPart } from '@kiln/snapshotter';
import type { LayerCompression } from './media-types.js';

/** One layer to write: the tar described by `parts`, compressed into the new file `out`. */
export interface CompressJob {
  parts: LayerPart[];
  compression: LayerCompression;
  /** Codec level (already defaulted). */
  level: number;
  /** Path of the blob file to create (must not exist). */
  out: string;
}

export interface CompressResult {
  /** sha256 of the uncompressed tar. */
  diffId: string;
  /** sha256 and length of the written blob. */
  digest: string;
  size: number;
}

/*
 * The thread's code, evaluated as a CommonJS script with Node built-ins
 * only: a module file would not load from TypeScript sources under the test
 * runner, and the job (read files, hash, compress, write) needs nothing
 * else. It reads the planned files synchronously, hashes the tar (diff id),
 * compresses it with gzip (zlib, in fixed-size members on the thread pool;
 * members that would not shrink are stored) or `zstd` (Debian's CLI, one
 * thread, so the output does not depend on the machine) and hashes what it
 * writes.
 */
const THREAD_SOURCE = String.raw`
const { parentPort } = require('node:worker_threads');
const fs = require('node:fs');
const crypto = require('node:crypto');
const zlib = require('node:zlib');
const { spawn } = require('node:child_process');
const { pipeline } = require('node:stream/promises');
const { Readable, Transform } = require('node:stream');

function* tarBytes(parts, diff) {
  const CHUNK = 1 << 20;
  for (const p of parts) {
    if (p.kind === 'bytes') { diff.update(p.data); yield Buffer.from(p.data.buffer, p.data.byteOffset, p.data.byteLength); continue; }
    const fd = fs.openSync(p.path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      let left = p.size;
      while (left > 0) {
        const buf = Buffer.allocUnsafe(Math.min(CHUNK, left));
        const n = fs.readSync(fd, buf, 0, buf.length, null);
        if (n === 0) throw new Error(p.path + ' shrank while its layer was written');
        left -= n;
        const chunk = buf.subarray(0, n);
        diff.update(chunk);
        yield chunk;
      }
    } finally { fs.closeSync(fd); }
  }
}

// gzip in members of GZIP_BLOCK input bytes each, up to GZIP_AHEAD compressed at once on the
// thread pool and written in order: one big layer uses every core. Members are cut at fixed
// offsets of the tar, so the bytes never depend on timing or the number of cores; every gzip
// reader (Go's, GNU gzip, zlib's gunzip) reads concatenated members as one stream (RFC 1952).
const GZIP_BLOCK = 4 << 20;
const GZIP_AHEAD = 4;
// A block that does not compress (random bytes, or files already compressed: archives, media,
// binaries packed by upx) is stored (gzip level 0: deflate's stored blocks, ~10x faster than
// level 1 or 6, and about as big as what they would give). Whether it compresses is decided
// from a few samples of the block at level 1, so it depends only on the bytes.
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
async function* gzipMembers(source, level) {
  const queue = [];
  const compress = (data) => {
    const use = level > 0 && !compressible(data) ? 0 : level;
    const p = new Promise((resolve, reject) => zlib.gzip(data, { level: use }, (err, out) => (err ? reject(err) : resolve(out))));
    p.catch(() => {}); // awaited in order below; a failure before then is not unhandled
    return p;
  };
  let held = [];
  let heldBytes = 0;
  let members = 0;
  for await (const chunk of source) {
    let c = chunk;
    while (heldBytes + c.length >= GZIP_BLOCK) {
      const take = GZIP_BLOCK - heldBytes;
      held.push(c.subarray(0, take));
      c = c.subarray(take);
      queue.push(compress(Buffer.concat(held, GZIP_BLOCK)));
      members++;
      held = [];
      heldBytes = 0;
      while (queue.length >= GZIP_AHEAD) yield await queue.shift();
    }
    if (c.length > 0) {
      held.push(c);
      heldBytes += c.length;
    }
  }
  // The tail, or one empty member for an empty layer.
  if (heldBytes > 0 || members === 0) queue.push(compress(Buffer.concat(held, heldBytes)));
  while (queue.length > 0) yield await queue.shift();
}

async function run(job) {
  const diff = crypto.createHash('sha256');
  const blob = crypto.createHash('sha256');
  let size = 0;
  const source = Readable.from(tarBytes(job.parts, diff), { objectMode: false, highWaterMark: 1 << 20 });
  const counter = new Transform({ transform(c, _e, cb) { blob.update(c); size += c.length; cb(null, c); } });
  const file = fs.createWriteStream(job.out, { flags: 'wx', mode: 0o600 });
  if (job.compression === 'gzip') {
    await pipeline(Readable.from(gzipMembers(source, job.level), { objectMode: false }), counter, file);
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
    await Promise.all([pipeline(source, child.stdin), pipeline(child.stdout, counter, file), exited]);
  } else {
    await pipeline(source, counter, file);
  }
  return { diffId: 'sha256:' + diff.digest('hex'), digest: 'sha256:' + blob.digest('hex'), size };
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
        else reject(new KilnError('internal', `failed to write layer ${job.out}: ${m.error}`));
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
      t.postMessage(job);
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
