import { availableParallelism } from 'node:os';
import { Worker as Thread } from 'node:worker_threads';
import { errnoError } from './fs-util.js';

/**
 * One small regular file to copy: `target` is created (O_EXCL|O_NOFOLLOW,
 * so nothing already there, not even a planted symlink, is written through;
 * permission bits of `mode`) with `src`'s bytes (an empty source is not
 * opened), then owner, mode and mtime are set on the open fd in that order
 * (as `applyAttrsToFd`), fchown and fchmod only where the creation did not
 * already give them (learnt by fstat of the batch's first files: a batch is
 * one directory).
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

/**
 * One new file of a received context: `target` is created with `data`
 * (O_EXCL|O_NOFOLLOW, permission bits of `mode`); when the name is taken
 * (a seeded copy's entry, a planted symlink), what is there is removed,
 * never followed, and the file is made again. Then owner, mode and mtime
 * on the open fd, fchown and fchmod only where the creation did not already
 * give them (learnt by fstat of the batch's first files, as the receive's
 * own setNewFileAttrs: a batch is one directory).
 */
export interface FileWriteJob {
  target: string;
  /** The whole body (its own ArrayBuffer: a view into a bigger one would be cloned whole); absent: empty. */
  data?: Uint8Array;
  mode: number;
  uid: number;
  gid: number;
  mtimeMs: number;
}

export type FileJob = FileCopyJob | FileWriteJob;

/** Numbers per job in an encoded batch: kind (0 copy, 1 write), mode, uid, gid, mtimeMs (NaN: none), size. */
const BATCH_FIELDS = 6;

/**
 * A batch as posted to a thread: paths joined by NUL (never in a path) and
 * the numbers in one Float64Array, bodies in one buffer (both transferred,
 * not cloned). Cloning an array of job objects cost the main thread ~11 µs
 * a file (postMessage was a tenth of a 50,000-file build's daemon CPU).
 */
function encodeBatch(id: number, jobs: readonly FileJob[]): { message: object; transfer: ArrayBuffer[] } {
  const nums = new Float64Array(jobs.length * BATCH_FIELDS);
  const targets: string[] = [];
  const srcs: string[] = [];
  let bytes = 0;
  for (const j of jobs) if ('data' in j && j.data) bytes += j.data.length;
  const data = new Uint8Array(bytes);
  let at = 0;
  jobs.forEach((j, i) => {
    const k = i * BATCH_FIELDS;
    targets.push(j.target);
    nums[k + 1] = j.mode;
    nums[k + 2] = j.uid;
    nums[k + 3] = j.gid;
    nums[k + 4] = j.mtimeMs ?? NaN;
    if ('src' in j) {
      nums[k] = 0;
      nums[k + 5] = j.size;
      srcs.push(j.src);
    } else {
      nums[k] = 1;
      nums[k + 5] = j.data?.length ?? 0;
      srcs.push('');
      if (j.data) {
        data.set(j.data, at);
        at += j.data.length;
      }
    }
  });
  return { message: { id, targets: targets.join('\0'), srcs: srcs.join('\0'), nums, data }, transfer: [nums.buffer, data.buffer] };
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
const FIELDS = ${BATCH_FIELDS};
const NEW_FILE = C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW;
/** What a file created in the batch's directory is born with: owner, permission bits seen kept or dropped. */
let creation;

function copyOne(j) {
  const createMode = j.mode & 0o777;
  // An empty source (its lstat size: sources are committed snapshots) is not even opened.
  const input = j.size === 0 ? -1 : fs.openSync(j.src, C.O_RDONLY | C.O_NOFOLLOW);
  try {
    const output = fs.openSync(j.target, NEW_FILE, createMode);
    try {
      let total = 0;
      while (input >= 0) {
        const n = fs.readSync(input, buf, 0, buf.length, null);
        if (n === 0) break;
        for (let off = 0; off < n; ) off += fs.writeSync(output, buf, off, n - off);
        total += n;
        // A short read of a regular file is its end: no extra read for the usual small file.
        if (n < buf.length && total >= j.size) break;
      }
      setAttrs(output, j, createMode);
    } finally { fs.closeSync(output); }
  } finally { if (input >= 0) fs.closeSync(input); }
}

function createReplacing(target, mode) {
  try {
    return fs.openSync(target, NEW_FILE, mode);
  } catch (err) {
    if (err.code !== 'EEXIST') throw err;
  }
  // rmSync lstats: a symlink is removed itself, never its target.
  fs.rmSync(target, { recursive: true, force: true });
  return fs.openSync(target, NEW_FILE, mode);
}

/**
 * Owner, mode (chown first: it would clear setuid bits) and mtime of a file
 * just created with createMode: fchown and fchmod only where the creation
 * did not already give them, learnt by fstat of the batch's first files.
 */
function setAttrs(fd, j, createMode) {
  const c = creation;
  if (c.uid < 0 || (createMode & ~(c.kept | c.dropped)) !== 0) {
    const st = fs.fstatSync(fd);
    c.uid = st.uid;
    c.gid = st.gid;
    c.kept |= createMode & st.mode;
    c.dropped |= createMode & ~st.mode;
  }
  if (j.uid !== c.uid || j.gid !== c.gid) fs.fchownSync(fd, j.uid, j.gid);
  if ((j.mode & 0o7777) !== createMode || (createMode & c.dropped) !== 0) fs.fchmodSync(fd, j.mode & 0o7777);
  if (j.mtimeMs !== undefined) { const t = j.mtimeMs / 1000; fs.futimesSync(fd, t, t); }
}

function writeOne(j) {
  const createMode = j.mode & 0o777;
  const fd = createReplacing(j.target, createMode);
  try {
    const d = j.data;
    if (d) for (let off = 0; off < d.length; ) off += fs.writeSync(fd, d, off, d.length - off);
    setAttrs(fd, j, createMode);
  } finally { fs.closeSync(fd); }
}

/** The jobs of a batch as encodeBatch packs them (see there). */
function decodeBatch(b) {
  const targets = b.targets.split('\0');
  const srcs = b.srcs.split('\0');
  const jobs = new Array(targets.length);
  let at = 0;
  for (let i = 0, k = 0; i < targets.length; i++, k += FIELDS) {
    const n = b.nums;
    const j = { target: targets[i], mode: n[k + 1], uid: n[k + 2], gid: n[k + 3], mtimeMs: Number.isNaN(n[k + 4]) ? undefined : n[k + 4], size: n[k + 5] };
    if (n[k] === 0) j.src = srcs[i];
    else if (j.size > 0) {
      j.data = b.data.subarray(at, at + j.size);
      at += j.size;
    }
    jobs[i] = j;
  }
  return jobs;
}

parentPort.on('message', (b) => {
  const id = b.id;
  const jobs = decodeBatch(b);
  let i = 0;
  creation = { uid: -1, gid: -1, kept: 0, dropped: 0 };
  try {
    for (; i < jobs.length; i++) {
      const j = jobs[i];
      if (j.src === undefined) writeOne(j);
      else copyOne(j);
    }
    parentPort.postMessage({ id });
  } catch (err) {
    const text = String((err && err.message) || err);
    // Node's text ends in ", SYSCALL 'PATH'": the host path stays here.
    const cut = err && err.syscall ? text.indexOf(', ' + err.syscall + " '") : -1;
    parentPort.postMessage({ id, failed: i, code: (err && err.code) || 'EIO', syscall: err && err.syscall, message: cut >= 0 ? text.slice(0, cut) : text });
  }
});
`;

interface Batch {
  resolve: () => void;
  reject: (err: Error) => void;
  jobs: FileJob[];
}

interface Slot {
  thread: Thread;
  pending: Map<number, Batch>;
}

/**
 * Copies (COPY) or writes (context receive) batches of small files on
 * worker threads, so the creates of a big COPY or transfer (the kernel's
 * work: an overlay create, a write and attribute calls per file) run on
 * every core while the caller walks the tree or reads the stream. Batches
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
  run(jobs: FileJob[], lane = this.next++): Promise<void> {
    const slot = this.slot(lane);
    const id = ++this.ids;
    return new Promise<void>((resolve, reject) => {
      if (slot.pending.size === 0) slot.thread.ref();
      slot.pending.set(id, { resolve, reject, jobs });
      const { message, transfer } = encodeBatch(id, jobs);
      slot.thread.postMessage(message, transfer);
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
