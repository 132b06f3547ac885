import { createHash } from 'node:crypto';
import { InvalidArgumentError } from './errors/errors.js';

/** "sha256:<64 hex>" (sha512 accepted as "sha512:<128 hex>"). */
export type Digest = `${'sha256' | 'sha512'}:${string}`;

const DIGEST_RE = /^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;

export function sha256(data: Uint8Array | string): Digest {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

export function isDigest(value: string): value is Digest {
  return DIGEST_RE.test(value);
}

/** Validates a digest string, throwing InvalidArgumentError naming `field`. */
export function parseDigest(value: string, field = 'digest'): Digest {
  if (!isDigest(value)) throw new InvalidArgumentError(`invalid digest "${value}"`, field);
  return value;
}
