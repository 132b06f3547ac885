import { CanceledError } from '@kiln/common';

/** Resolves when `signal` aborts (never, without a signal); `dispose` drops the listener. */
export function whenAborted(signal: AbortSignal | undefined): { promise: Promise<void>; dispose(): void } {
  if (!signal) return { promise: new Promise<void>(() => {}), dispose() {} };
  if (signal.aborted) return { promise: Promise.resolve(), dispose() {} };
  let onAbort = () => {};
  const promise = new Promise<void>((resolve) => {
    onAbort = () => resolve();
    signal.addEventListener('abort', onAbort, { once: true });
  });
  return { promise, dispose: () => signal.removeEventListener('abort', onAbort) };
}

export function canceled(signal: AbortSignal, what: string): CanceledError {
  const reason = signal.reason instanceof Error ? `: ${signal.reason.message}` : '';
  return new CanceledError(`failed to ${what}: canceled${reason}`, { cause: signal.reason });
}
