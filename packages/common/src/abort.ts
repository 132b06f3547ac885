import { CanceledError } from './errors/errors.js';

/** Throws CanceledError when the signal is aborted. */
export function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw new CanceledError(reasonMessage(signal.reason));
}

/** Resolves after `ms`, or rejects with CanceledError when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new CanceledError(reasonMessage(signal.reason)));
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(new CanceledError(reasonMessage(signal?.reason)));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function reasonMessage(reason: unknown): string {
  return reason instanceof Error ? reason.message : reason ? String(reason) : 'operation canceled';
}
