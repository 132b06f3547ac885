import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

/**
 * Extended attributes read by system calls (llistxattr/lgetxattr through
 * koffi) on a worker thread of their own, instead of one `getfattr` process
 * per tree. A layer diff reads the attributes of its two trees: through
 * getfattr that was two process starts per layer (plus the PATH search),
 * tens of ms each on a loaded host, on the critical path of every export;
 * for a small layer the calls themselves take microseconds. The walk and
 * the calls run on the thread, so a big tree never blocks the event loop.
 *
 * Symlinks are never followed (the l* calls, and a walk that descends only
 * into real directories); the root itself is not read, as `getfattr -R`
 * lists it but callers drop it.
 *
 * Resolves to `null` when system calls are not available (no koffi build
 * for this platform, not Linux, or `KILN_XATTR_SYSCALLS=0`): the caller
 * then reads them another way.
 */

/** Attributes by path relative to the root (`a/b`), each name -> raw value; entries without any are absent. */
export type XattrMap = Map<string, Record<string, Buffer>>;

/** Every entry under `root`, recursively (not the root). */
export function readXattrTree(root: string): Promise<XattrMap | null> {
  return call({ op: 'tree', root });
}

/** The given entries of `root` (relative paths, not followed, directories not descended); a missing one rejects. */
export function readXattrPaths(root: string, rels: readonly string[]): Promise<XattrMap | null> {
  if (rels.length === 0) return Promise.resolve(new Map());
  return call({ op: 'paths', root, rels: [...rels] });
}

type Request = { op: 'tree'; root: string } | { op: 'paths'; root: string; rels: string[] };
type Reply = { id: number; unavailable?: boolean; error?: string; entries?: [string, [string, Uint8Array][]][] };

/** The thread's code (CommonJS, run with `eval`, as the mount thread's). */
const THREAD_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const fs = require('node:fs');
let llistxattr, lgetxattr, strerror, errno;
try {
  const koffi = require(workerData.koffi);
  const libc = koffi.load('libc.so.6');
  llistxattr = libc.func('intptr_t llistxattr(const uint8_t *path, _Out_ uint8_t *list, size_t size)');
  lgetxattr = libc.func('intptr_t lgetxattr(const uint8_t *path, const uint8_t *name, _Out_ uint8_t *value, size_t size)');
  strerror = libc.func('const char *strerror(int errnum)');
  errno = () => koffi.errno();
} catch {
  // No koffi build here: every call is answered "unavailable".
}
const ENOENT = 2, ENODATA = 61, ERANGE = 34, ENOTSUP = 95;
const SLASH = Buffer.from('/');
const NUL = Buffer.alloc(1);
class CallError extends Error {}
function fail(what, path) {
  const e = errno();
  throw new CallError(what + ' ' + path.subarray(0, path.length - 1).toString() + ': ' + strerror(e));
}
// Reads the size, then the bytes; again when the size grew in between (ERANGE).
function sized(read, what, path) {
  for (;;) {
    const n = read(null, 0);
    if (n < 0) { const e = errno(); if (e === ENOTSUP || e === ENODATA) return null; fail(what, path); }
    if (n === 0) return Buffer.alloc(0);
    const buf = Buffer.allocUnsafe(n);
    const got = read(buf, n);
    if (got >= 0) return buf.subarray(0, got);
    const e = errno();
    if (e === ENOTSUP || e === ENODATA) return null;
    if (e !== ERANGE) fail(what, path);
  }
}
// One entry's attributes ([name, value] pairs), or null when it has none. path ends with NUL.
function readOne(path) {
  const list = sized((b, n) => llistxattr(path, b, n), 'llistxattr', path);
  if (!list || list.length === 0) return null;
  const out = [];
  let start = 0;
  for (let i = 0; i < list.length; i++) {
    if (list[i] !== 0) continue;
    const name = list.subarray(start, i + 1);
    start = i + 1;
    if (name.length <= 1) continue;
    const value = sized((b, n) => lgetxattr(path, name, b, n), 'lgetxattr', path);
    if (value) out.push([name.subarray(0, name.length - 1).toString('latin1'), value]);
  }
  return out.length ? out : null;
}
function walk(abs, rel, entries) {
  for (const d of fs.readdirSync(abs, { withFileTypes: true, encoding: 'buffer' })) {
    const child = Buffer.concat([abs, SLASH, d.name]);
    const childRel = rel === '' ? d.name.toString() : rel + '/' + d.name.toString();
    const attrs = readOne(Buffer.concat([child, NUL]));
    if (attrs) entries.push([childRel, attrs]);
    if (d.isDirectory()) walk(child, childRel, entries);
  }
}
parentPort.on('message', ({ id, req }) => {
  if (!llistxattr) return parentPort.postMessage({ id, unavailable: true });
  const entries = [];
  try {
    const root = Buffer.from(req.root.replace(/\\/+$/, '') || '/');
    if (req.op === 'tree') walk(root, '', entries);
    else for (const rel of req.rels) {
      if (rel === '') continue; // the root, which a tree read leaves out too
      const attrs = readOne(Buffer.concat([root, SLASH, Buffer.from(rel), NUL]));
      if (attrs) entries.push([rel, attrs]);
    }
  } catch (err) {
    return parentPort.postMessage({ id, error: err.message });
  }
  parentPort.postMessage({ id, entries });
});
`;

class XattrThread {
  private next = 0;
  private readonly waiting = new Map<number, { resolve: (m: XattrMap | null) => void; reject: (err: Error) => void }>();
  private readonly worker: Worker;

  constructor(koffiEntry: string) {
    this.worker = new Worker(THREAD_SOURCE, { eval: true, workerData: { koffi: koffiEntry } });
    // Idle, it must not keep the process alive; while calls wait, it must.
    this.worker.unref();
    this.worker.on('message', (m: Reply) => {
      const w = this.waiting.get(m.id);
      if (!w) return;
      this.waiting.delete(m.id);
      if (this.waiting.size === 0) this.worker.unref();
      if (m.unavailable) {
        koffiPath = null;
        if (thread === this) thread = undefined;
        w.resolve(null);
      } else if (m.error !== undefined) w.reject(new Error(m.error));
      else w.resolve(new Map((m.entries ?? []).map(([rel, attrs]) => [rel, Object.fromEntries(attrs.map(([n, v]) => [n, Buffer.from(v.buffer, v.byteOffset, v.byteLength)]))])));
    });
    this.worker.on('error', (err) => this.fail(err));
    this.worker.on('exit', (code) => this.fail(new Error(`xattr thread exited (${code})`)));
  }

  call(req: Request): Promise<XattrMap | null> {
    const id = ++this.next;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      if (this.waiting.size === 1) this.worker.ref();
      this.worker.postMessage({ id, req });
    });
  }

  private fail(err: Error): void {
    if (thread === this) thread = undefined;
    for (const w of this.waiting.values()) w.reject(err);
    this.waiting.clear();
  }
}

let thread: XattrThread | undefined;
let koffiPath: string | null | undefined;

function call(req: Request): Promise<XattrMap | null> {
  if (process.env.KILN_XATTR_SYSCALLS === '0' || process.platform !== 'linux') return Promise.resolve(null);
  if (!thread) {
    if (koffiPath === undefined) {
      try {
        koffiPath = createRequire(import.meta.url).resolve('koffi');
      } catch {
        koffiPath = null;
      }
    }
    if (koffiPath === null) return Promise.resolve(null);
    thread = new XattrThread(koffiPath);
  }
  return thread.call(req);
}
