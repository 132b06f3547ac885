import { CanceledError, InvalidArgumentError, isDigest, KilnError, NotFoundError, type Digest } from '@kiln/common';
import type { Labels, WriteRequest } from '../content-store.js';

export type Algorithm = 'sha256' | 'sha512';
export const ALGORITHMS: readonly Algorithm[] = ['sha256', 'sha512'];
export const HEX_RE: Record<Algorithm, RegExp> = { sha256: /^[a-f0-9]{64}$/, sha512: /^[a-f0-9]{128}$/ };

/** Longest ref or lease id accepted, in characters. */
export const MAX_REF_LENGTH = 4096;
/** Longest label (key + value), in bytes, as in containerd. */
export const MAX_LABEL_BYTES = 4096;

/** A validated digest split into its parts. */
export interface ParsedDigest {
  digest: Digest;
  algorithm: Algorithm;
  hex: string;
}

export function parseContentDigest(value: string, field = 'digest'): ParsedDigest {
  if (typeof value !== 'string' || !isDigest(value)) {
    throw new InvalidArgumentError(`invalid digest ${quote(value)} (want sha256:<64 hex> or sha512:<128 hex>)`, field);
  }
  const colon = value.indexOf(':');
  return { digest: value, algorithm: value.slice(0, colon) as Algorithm, hex: value.slice(colon + 1) };
}

export interface ValidWriteRequest {
  ref: string;
  expected: ParsedDigest | undefined;
  expectedSize: number | undefined;
  labels: Labels;
  offset: number;
  lease: string | undefined;
}

export function validateRef(ref: unknown, field = 'ref'): string {
  if (typeof ref !== 'string' || ref === '') throw new InvalidArgumentError(`${field} must be a non-empty string`, field);
  if (ref.length > MAX_REF_LENGTH) throw new InvalidArgumentError(`${field} longer than ${MAX_REF_LENGTH} characters`, field);
  return ref;
}

export function validateWriteRequest(req: WriteRequest): ValidWriteRequest {
  if (typeof req !== 'object' || req === null) throw new InvalidArgumentError('write needs a request', 'request');
  const ref = validateRef(req.ref, 'ref');
  const expected = req.expectedDigest === undefined ? undefined : parseContentDigest(req.expectedDigest, 'expectedDigest');
  if (req.expectedSize !== undefined) checkByteCount(req.expectedSize, 'expectedSize');
  const offset = req.offset ?? 0;
  checkByteCount(offset, 'offset');
  if (req.expectedSize !== undefined && offset > req.expectedSize) {
    throw new InvalidArgumentError(`offset ${offset} is past the expected size ${req.expectedSize}`, 'offset');
  }
  const lease = req.lease === undefined || req.lease === '' ? undefined : validateRef(req.lease, 'lease');
  return { ref, expected, expectedSize: req.expectedSize, labels: validateLabels(req.labels), offset, lease };
}

export function validateLabels(labels: Labels | undefined): Labels {
  if (labels === undefined) return {};
  if (typeof labels !== 'object' || labels === null || Array.isArray(labels)) {
    throw new InvalidArgumentError('labels must be an object of strings', 'labels');
  }
  const out: Labels = {};
  for (const [key, value] of Object.entries(labels)) {
    if (key === '') throw new InvalidArgumentError('label keys must not be empty', 'labels');
    if (typeof value !== 'string') throw new InvalidArgumentError(`label ${quote(key)} must have a string value`, 'labels');
    if (Buffer.byteLength(key) + Buffer.byteLength(value) > MAX_LABEL_BYTES) {
      throw new InvalidArgumentError(`label ${quote(key)} is longer than ${MAX_LABEL_BYTES} bytes`, 'labels');
    }
    Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

export function checkByteCount(n: number, field: string): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError(`${field} must be a non-negative integer, got ${n}`, field);
}

// ---- errors ----

export function blobNotFound(digest: Digest): NotFoundError {
  return new NotFoundError(`blob ${digest} not found`, { digest });
}

export function sizeMismatch(ref: string, expected: number, actual: number, more = false): KilnError {
  return new KilnError(
    'failed_precondition',
    `size mismatch for ingest ref ${quote(ref)}: expected ${expected} bytes, got ${more ? 'more than ' : ''}${more ? expected : actual}`,
    { ref, expectedSize: expected, actualSize: actual },
  );
}

export function quote(value: unknown): string {
  const s = typeof value === 'string' ? value : String(value);
  return JSON.stringify(s.length > 200 ? `${s.slice(0, 200)}...` : s);
}

export function checkAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw canceled(signal);
}

export function canceled(signal: AbortSignal): CanceledError {
  const reason: unknown = signal.reason;
  if (reason instanceof CanceledError) return reason;
  return new CanceledError(reason instanceof Error ? reason.message : reason ? String(reason) : 'operation canceled');
}

/** `promise`, or a CanceledError as soon as `signal` aborts, whichever comes first. */
export async function raceAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  checkAborted(signal);
  let onAbort!: () => void;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(canceled(signal));
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([promise, aborted]);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}
