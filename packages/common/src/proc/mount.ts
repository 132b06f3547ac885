import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { execLight } from './spawner.js';

/**
 * mount(2) and umount2(2) without a process per call. A build step mounts
 * its overlay and unmounts it at commit, and an export mounts a view per
 * layer: through `mount`/`umount` that was two to four process starts per
 * step, each several ms of CPU (exec, the dynamic loader, libmount reading
 * the mount table) and far more wall time on a loaded host. Here the calls
 * go to libc through koffi (a C FFI shipped prebuilt on npm) on one worker
 * thread, so a slow umount (it waits for an RCU grace period) never blocks
 * the event loop, and errno is read on the thread that made the call.
 *
 * Without koffi (a platform it has no build for) or with
 * `KILN_MOUNT_SYSCALLS=0`, the `mount` and `umount` commands run through the
 * spawn helper instead; both paths report failures as a MountError.
 */

/** Why a mount call failed: `not_mounted` (also: no such path), `busy`, or `other`. */
export type MountErrorKind = 'not_mounted' | 'busy' | 'other';

export class MountError extends Error {
  constructor(
    message: string,
    readonly kind: MountErrorKind,
  ) {
    super(message);
    this.name = 'MountError';
  }
}

/** Mounts `source` of type `fstype` at `target` with the file-system options `data` (no mount flags). */
export async function mountFs(fstype: string, source: string, target: string, data: string): Promise<void> {
  const args = ['-t', fstype, '-o', data, source, target];
  const thread = mountThread();
  if (!thread) {
    await command('mount', args);
    return;
  }
  await thread.call({ op: 'mount', fstype, source, target, data }, `mount ${fstype} on ${target}`, () => command('mount', args));
}

/**
 * Unmounts `target`; `lazy` detaches it at once and lets the kernel finish
 * when it is no longer busy (`umount -l`). Rejects with a MountError whose
 * kind tells "not mounted" and "busy" apart from other failures.
 */
export async function unmountFs(target: string, opts: { lazy?: boolean } = {}): Promise<void> {
  const args = opts.lazy ? ['-l', target] : [target];
  const thread = mountThread();
  if (!thread) {
    await command('umount', args);
    return;
  }
  await thread.call({ op: 'umount', target, flags: opts.lazy ? MNT_DETACH : 0 }, `umount ${target}`, () => command('umount', args));
}

/**
 * syncfs(2) of the file system holding the directory open as `dirFd` (its
 * path is `dirPath`): writes back everything dirty on that file system, not
 * only this process's files, and waits. Runs on a thread of its own, so a
 * slow write-back never holds up a mount or unmount. syncfs reports a
 * write-back error the file system met since the descriptor's last syncfs
 * (or its open): a caller that keeps one descriptor open across calls misses
 * no error between them. Without koffi, `sync -f dirPath` through the spawn
 * helper (errors only from that call on).
 */
export async function syncFileSystem(dirFd: number, dirPath: string): Promise<void> {
  const thread = syncThread();
  if (!thread) {
    await command('sync', ['-f', dirPath]);
    return;
  }
  await thread.call({ op: 'syncfs', fd: dirFd }, `syncfs ${dirPath}`, () => command('sync', ['-f', dirPath]));
}

/** Whether mounts are made by system calls in this process (else by the mount commands), as far as known before a first call. */
export function mountSyscallsAvailable(): boolean {
  return mountThread() !== undefined;
}

const MNT_DETACH = 2;
const EBUSY = 16;
const EINVAL = 22;
const ENOENT = 2;

type Request = { op: 'mount'; fstype: string; source: string; target: string; data: string } | { op: 'umount'; target: string; flags: number } | { op: 'syncfs'; fd: number };

/** The thread's code (CommonJS, run with `eval`: no file to find next to a bundled or source build). */
const THREAD_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
let mount, umount2, strerror, errno, syncfs;
try {
  const koffi = require(workerData.koffi);
  const libc = koffi.load('libc.so.6');
  mount = libc.func('int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)');
  umount2 = libc.func('int umount2(const char *target, int flags)');
  strerror = libc.func('const char *strerror(int errnum)');
  syncfs = libc.func('int syncfs(int fd)');
  errno = () => koffi.errno();
} catch {
  // No build of koffi for this platform: every call is answered "unavailable" (the caller runs the command).
}
parentPort.on('message', ({ id, req }) => {
  if (!mount) return parentPort.postMessage({ id, unavailable: true });
  const rc = req.op === 'mount' ? mount(req.source, req.target, req.fstype, 0, req.data) : req.op === 'umount' ? umount2(req.target, req.flags) : syncfs(req.fd);
  const e = rc === 0 ? 0 : errno();
  parentPort.postMessage({ id, errno: e, why: e ? strerror(e) : '' });
});
`;

class MountThread {
  private next = 0;
  private readonly waiting = new Map<number, { resolve: () => void; reject: (err: Error) => void; what: string; op: Request['op']; fallback: () => Promise<void> }>();
  private readonly worker: Worker;

  constructor(
    koffiEntry: string,
    private readonly onGone?: () => void,
  ) {
    this.worker = new Worker(THREAD_SOURCE, { eval: true, workerData: { koffi: koffiEntry } });
    // Idle, it must not keep the process alive; while calls wait, it must.
    this.worker.unref();
    this.worker.on('message', (m: { id?: number; errno?: number; why?: string; unavailable?: boolean }) => {
      if (m.id === undefined) return;
      const w = this.waiting.get(m.id);
      if (!w) return;
      this.waiting.delete(m.id);
      if (this.waiting.size === 0) this.worker.unref();
      if (m.unavailable) {
        // Later calls go to the commands at once; this one too.
        koffiPath = null;
        if (thread === this) thread = undefined;
        this.onGone?.();
        w.fallback().then(w.resolve, w.reject);
      } else if (!m.errno) w.resolve();
      else w.reject(new MountError(`${w.what}: ${m.why}`, errorKind(w.op, m.errno)));
    });
    this.worker.on('error', (err) => this.fail(err));
    this.worker.on('exit', (code) => this.fail(new Error(`mount thread exited (${code})`)));
  }

  call(req: Request, what: string, fallback: () => Promise<void>): Promise<void> {
    const id = ++this.next;
    return new Promise<void>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject, what, op: req.op, fallback });
      if (this.waiting.size === 1) this.worker.ref();
      this.worker.postMessage({ id, req });
    });
  }

  private fail(err: Error): void {
    if (thread === this) thread = undefined;
    this.onGone?.();
    for (const w of this.waiting.values()) w.reject(new MountError(`${w.what}: ${err.message}`, 'other'));
    this.waiting.clear();
  }
}

/** umount2 says EINVAL for a path that is not a mount point; for mount(2) it is a bad option like any other. */
function errorKind(op: Request['op'], errno: number): MountErrorKind {
  if (errno === EBUSY) return 'busy';
  return op === 'umount' && (errno === EINVAL || errno === ENOENT) ? 'not_mounted' : 'other';
}

let thread: MountThread | undefined;
let syncer: MountThread | undefined;
let koffiPath: string | null | undefined;

/** The second thread, for syncfs only. */
function syncThread(): MountThread | undefined {
  if (!mountThread()) return undefined;
  syncer ??= new MountThread(koffiPath!, () => {
    syncer = undefined;
  });
  return syncer;
}

function mountThread(): MountThread | undefined {
  if (process.env.KILN_MOUNT_SYSCALLS === '0' || process.platform !== 'linux') return undefined;
  if (thread) return thread;
  if (koffiPath === undefined) koffiPath = findKoffi();
  if (koffiPath === null) return undefined;
  thread = new MountThread(koffiPath);
  return thread;
}

/**
 * koffi's entry point when it is installed, else null. Only resolved here:
 * the thread loads it (tens of ms on a loaded host, kept off the event loop
 * of a daemon that is starting) and answers "unavailable" when it has no
 * build for this platform.
 */
function findKoffi(): string | null {
  try {
    return createRequire(import.meta.url).resolve('koffi');
  } catch {
    return null;
  }
}

/** The mount commands through the spawn helper, their failures told apart by their messages. */
async function command(cmd: 'mount' | 'umount' | 'sync', args: string[]): Promise<void> {
  try {
    await execLight(cmd, args);
  } catch (err) {
    const msg = (err as Error).message;
    const kind: MountErrorKind = /busy/i.test(msg) ? 'busy' : cmd === 'umount' && /not mounted|no mount point|mountpoint not found|No such file/i.test(msg) ? 'not_mounted' : 'other';
    throw new MountError(msg, kind);
  }
}
