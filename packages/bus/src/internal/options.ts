import { InvalidArgumentError } from '@kiln/common';
import { busDefaults, type ConsumeOptions, type RequestOptions } from '../bus.js';

export interface CompiledRequestOptions {
  timeoutMs: number;
  signal: AbortSignal | undefined;
}

export function compileRequestOptions(opts: RequestOptions = {}): CompiledRequestOptions {
  const timeoutMs = opts.timeoutMs ?? busDefaults.requestTimeoutMs;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw new InvalidArgumentError(`invalid timeoutMs ${timeoutMs}: must be a positive number`, 'timeoutMs');
  }
  return { timeoutMs, signal: opts.signal };
}

export interface CompiledConsumeOptions {
  signal: AbortSignal;
  concurrency: number;
  redeliveryDelayMs: number;
}

export function compileConsumeOptions(opts: ConsumeOptions): CompiledConsumeOptions {
  const signal = opts?.signal as Partial<AbortSignal> | undefined;
  if (typeof signal?.aborted !== 'boolean' || typeof signal.addEventListener !== 'function') {
    throw new InvalidArgumentError('consume needs an AbortSignal to stop it', 'signal');
  }
  const concurrency = opts.concurrency ?? busDefaults.concurrency;
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new InvalidArgumentError(`invalid concurrency ${concurrency}: must be an integer >= 1`, 'concurrency');
  }
  const redeliveryDelayMs = opts.redeliveryDelayMs ?? busDefaults.redeliveryDelayMs;
  if (!Number.isFinite(redeliveryDelayMs) || redeliveryDelayMs < 0) {
    throw new InvalidArgumentError(`invalid redeliveryDelayMs ${redeliveryDelayMs}: must be >= 0`, 'redeliveryDelayMs');
  }
  return { signal: opts.signal, concurrency, redeliveryDelayMs };
}
