import type { FileHandle } from 'node:fs/promises';
import { createRequire } from 'node:module';

/**
 * Copies `length` bytes of `src` at `srcOffset` into `dest` at `destOffset`
 * in the kernel (copy_file_range(2) through koffi, on the libuv pool: the
 * bytes never enter the process, so a 200 MiB blob costs no buffers, no
 * garbage collections and no user-space copy). Where the kernel cannot (no
 * koffi build, another file system, an old kernel), or stops early, the rest
 * is copied through a reused 1 MiB buffer. Resolves with the bytes copied;
 * fewer than `length` only when `src` ends first.
 */
export async function copyFileRange(src: FileHandle, srcOffset: number, dest: FileHandle, destOffset: number, length: number, signal?: AbortSignal): Promise<number> {
  let done = 0;
  const kernel = process.env.KILN_COPY_FILE_RANGE === '0' ? undefined : copyFileRangeCall();
  while (kernel && done < length) {
    signal?.throwIfAborted();
    const n = await kernel(src.fd, srcOffset + done, dest.fd, destOffset + done, Math.min(KERNEL_STEP, length - done));
    // 0: the source ended; -1: an error (EXDEV, EINVAL, ...): the user-space loop below says which.
    if (n <= 0) break;
    done += n;
  }
  if (done === length) return done;
  const buf = Buffer.allocUnsafe(Math.min(USER_CHUNK, length - done));
  while (done < length) {
    signal?.throwIfAborted();
    const { bytesRead } = await src.read(buf, 0, Math.min(buf.length, length - done), srcOffset + done);
    if (bytesRead === 0) break;
    let written = 0;
    while (written < bytesRead) written += (await dest.write(buf, written, bytesRead - written, destOffset + done + written)).bytesWritten;
    done += bytesRead;
  }
  return done;
}

/** One kernel call copies at most this much, so a cancel is seen between calls. */
const KERNEL_STEP = 64 * 1024 * 1024;
const USER_CHUNK = 1024 * 1024;

type KernelCopy = (inFd: number, inOff: number, outFd: number, outOff: number, len: number) => Promise<number>;
let kernelCopy: KernelCopy | null | undefined;

/** copy_file_range through koffi (loaded on first use), or null without it. */
function copyFileRangeCall(): KernelCopy | null {
  if (kernelCopy !== undefined) return kernelCopy;
  kernelCopy = null;
  if (process.platform !== 'linux') return null;
  try {
    const koffi = createRequire(import.meta.url)('koffi') as {
      load(lib: string): { func(decl: string): { async(...args: unknown[]): void } };
    };
    const fn = koffi.load('libc.so.6').func('intptr_t copy_file_range(int fd_in, _Inout_ int64_t *off_in, int fd_out, _Inout_ int64_t *off_out, size_t len, unsigned int flags)');
    kernelCopy = (inFd, inOff, outFd, outOff, len) =>
      new Promise<number>((resolve) => {
        fn.async(inFd, [inOff], outFd, [outOff], len, 0, (err: unknown, n: number | bigint) => resolve(err ? -1 : Number(n)));
      });
  } catch {
    kernelCopy = null;
  }
  return kernelCopy;
}
