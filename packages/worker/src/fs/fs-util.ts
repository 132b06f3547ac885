import { applyAttrs, applyAttrsToFd, errnoError, lstatOrUndefined, mkdirAllInRoot as mkdirAllInRootFd, type EntryAttrs } from '@kiln/snapshotter';

// One implementation of these lives with the layer applier in @kiln/snapshotter.
export { applyAttrs, applyAttrsToFd, errnoError, lstatOrUndefined };

/** Owner, mode and mtime given to directories a copy or mkdir creates. */
export type DirAttrs = EntryAttrs;

/**
 * Creates the directory `rel` and its missing parents inside `root` (mkdir -p
 * by directory fds, symlinks followed and re-rooted; see @kiln/snapshotter's
 * mkdirAllInRoot) and returns its host path. Created directories get `attrs`;
 * existing ones are left alone. Throws ENOTDIR when a component exists as a
 * non-directory.
 */
export async function mkdirAllInRoot(root: string, rel: string, attrs: DirAttrs = { mode: 0o755 }): Promise<string> {
  return mkdirAllInRootFd(root, rel, attrs);
}

/** A short reason for a filesystem error, e.g. "no such file or directory". */
export function describeFsError(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  switch (e?.code) {
    case 'ENOENT':
      return 'no such file or directory';
    case 'EEXIST':
      return 'file exists';
    case 'ENOTDIR':
      return 'not a directory';
    case 'EISDIR':
      return 'is a directory';
    case 'ENOTEMPTY':
      return 'directory not empty';
    case 'ELOOP':
      return 'too many levels of symbolic links';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'ENOSPC':
      return 'no space left on device';
    default:
      return e instanceof Error ? e.message : String(err);
  }
}

/**
 * `dir`/`name` for a normalized absolute `dir` and one name from readdir or
 * a checked path: a concatenation, not path.join (which normalizes the
 * whole string again; ~1 µs a call, several calls per file of a big COPY
 * or transfer).
 */
export function childPath(dir: string, name: string): string {
  return dir.endsWith('/') ? dir + name : `${dir}/${name}`;
}

/**
 * Lets timers and sockets run during a long loop of synchronous filesystem
 * calls: `await yielder.tick()` in the loop yields to the event loop once
 * `sliceMs` have passed since the last yield. Without it, copying or
 * hashing 100,000 files held the daemon's event loop for seconds, long
 * enough for a client's HTTP/2 ping to time out and fail the build.
 */
export class EventLoopYielder {
  #last = performance.now();
  constructor(readonly sliceMs = 25) {}

  tick(): Promise<void> | undefined {
    const now = performance.now();
    if (now - this.#last < this.sliceMs) return undefined;
    return new Promise((resolve) =>
      setImmediate(() => {
        this.#last = performance.now();
        resolve();
      }),
    );
  }
}
