import { availableParallelism } from 'node:os';
import { Worker as Thread } from 'node:worker_threads';
import { errnoError } from './fs-util.js';

/**
 * One small regular file to copy: `target` is created (O_EXCL|O_NOFOLLOW,
 * so nothing already there, not even a planted symlink, is written through)
 * with `src`'s bytes, then owner, mode and mtime are set on the open fd in
 * that order (as `applyAttrsToFd`).
 */
export interface FileCopyJob {
  src: string;
  target: string;
  /** The source's size when it was lstat'ed (the source is a committed snapshot: it cannot change). */
  size: number;
  mode: number;
  uid: number;
  gid: number;
  /** Unix time in ms; undefined leaves "now". */
  mtimeMs?: number;
}

/*
 * The thread's code (CommonJS, Node built-ins only, as the compress pool's:
 * a module file would not load from TypeScript sources under the test
 * runner). A batch runs in order and stops at its first failure, which is
 * reported with the job's index and errno code.
 */
const THREAD_SOURCE = String.raw`
const { parentPort } = require('node:worker_threads');
const fs = require('node:fs');
const C = fs.constants;
const buf = Buffer.allocUnsafe(64 * 1024);

function copyOne(j) {
  const input = fs.openSync(j.src, C.O_RDONLY | C.O_NOFOLLOW);
  try {
    const output = fs.openSync(j.target, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600);
    try {
      let total = 0;
      for (;;) {
        const n = fs.readSync(input, buf, 0, buf.length, null);
        if (n === 0) break;
        for (let off = 0; off < n; ) off += fs.writeSync(output, buf, off, n - off);
        total += n;
        // A short read of a regular file is its end: no extra read for the usual small file.
        if (n < buf.length && total >= j.size) break;
      }
      fs.fchownSync(output, j.uid, j.gid);
      fs.fchmodSync(output, j.mode & 0o7777);
      if (j.mtimeMs !== undefined) { const t = j.mtimeMs / 1000; fs.futimesSync(output, t, t); }
    } finally { fs.closeSync(output); }
  } finally { fs.closeSync(input); }
}

parentPort.on('message', ({ id, jobs }) => {
  let i = 0;
  try {
    for (; i < jobs.length; i++) copyOne(jobs[i]);
    parentPort.postMessage({ id });
  } catch (err) {
    parentPort.postMessage({ id, failed: i, code: (err && err.code) || 'EIO', syscall: err && err.syscall, message: String((err && err.message) || err) });
  }
});
`;

interface Batch {
  resolve: () => void;
  reject: (err: Error) => void;
  jobs: FileCopyJob[];
}

interface Slot {
  thread: Thread;
  pending: Map<number, Batch>;
}

/**
 * Copies batches of small files on worker threads, so the creates of a big
 * COPY (the kernel's work: an overlay create, a write and three attribute
 * calls per file) run on every core while the caller walks the tree. Batches
 * go round-robin to `size` threads, started on demand and kept; idle threads
 * do not keep the process alive. Each batch copies in order; what the
 * files end up as does not depend on the pool size.
 */
export class FileCopyPool {
  private readonly slots: Slot[] = [];
  private next = 0;
  private ids = 0;

  constructor(readonly size = Math.min(4, availableParallelism())) {}

  /**
   * Copies `jobs` in order on one thread; rejects with the first failure
   * (errno-style `code`). Batches of one `lane` go to the same thread: the
   * copy gives each directory its own, so two threads never create files in
   * one directory at once (they would contend for its lock).
   */
  run(jobs: FileCopyJob[], lane = this.next++): Promise<void> {
    const slot = this.slot(lane);
    const id = ++this.ids;
    return new Promise<void>((resolve, reject) => {
      if (slot.pending.size === 0) slot.thread.ref();
      slot.pending.set(id, { resolve, reject, jobs });
      slot.thread.postMessage({ id, jobs });
    });
  }

  /** Stops every thread; batches in flight fail. */
  async close(): Promise<void> {
    const slots = this.slots.splice(0);
    await Promise.all(slots.map((s) => s.thread.terminate()));
  }

  private slot(lane: number): Slot {
    const i = lane % this.size;
    while (this.slots.length <= i) this.slots.push(this.startThread());
    return this.slots[i]!;
  }

  private startThread(): Slot {
    const slot: Slot = { thread: new Thread(THREAD_SOURCE, { eval: true }), pending: new Map() };
    slot.thread.unref();
    slot.thread.on('message', (m: { id: number; failed?: number; code?: string; syscall?: string; message?: string }) => {
      const b = slot.pending.get(m.id);
      if (!b) return;
      slot.pending.delete(m.id);
      if (slot.pending.size === 0) slot.thread.unref();
      if (m.failed === undefined) b.resolve();
      // As the fs call's own error: an errno code and its syscall (OpFailure reduces it to errno text, no host path).
      else b.reject(Object.assign(errnoError(m.code ?? 'EIO', m.message ?? 'copy failed'), m.syscall ? { syscall: m.syscall } : {}));
    });
    const fail = (err: Error) => {
      const i = this.slots.indexOf(slot);
      if (i >= 0) this.slots.splice(i, 1);
      for (const b of slot.pending.values()) b.reject(err);
      slot.pending.clear();
    };
    slot.thread.on('error', (err) => fail(errnoError('EIO', `file copy thread failed: ${err.message}`)));
    slot.thread.on('exit', () => fail(errnoError('EIO', 'file copy thread stopped')));
    return slot;
  }
}

let shared: FileCopyPool | undefined;

/** The process's pool (threads are shared by every copy; idle ones cost nothing but memory). */
export function sharedFileCopyPool(): FileCopyPool {
  shared ??= new FileCopyPool();
  return shared;
}
