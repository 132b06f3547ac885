import type { Reference } from './reference.js';

/** An OCI descriptor (media type, digest, size, optional platform). */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { os: string; architecture: string; variant?: string };
  annotations?: Record<string, string>;
}

/**
 * The OCI distribution client Kiln's tiers use. Every call takes an
 * AbortSignal; errors are KilnErrors naming the reference (401/403 ->
 * unauthenticated/permission_denied, 404 -> not_found). Blob reads verify
 * the digest before the last chunk is released to the caller.
 * (The implementation is the registry issue's work; this is the seam.)
 */
export interface RegistryClient {
  /** Resolves a tag or digest to the manifest or index descriptor. */
  resolve(ref: Reference, signal?: AbortSignal): Promise<Descriptor>;
  /** Streams a blob or manifest by digest. */
  fetch(ref: Reference, desc: Descriptor, signal?: AbortSignal): AsyncIterable<Uint8Array>;
  /** Uploads a blob unless the registry has it (HEAD first, then mount, then upload). */
  pushBlob(ref: Reference, desc: Descriptor, data: () => AsyncIterable<Uint8Array>, signal?: AbortSignal): Promise<void>;
  /** Puts a manifest or index under a tag or by digest. */
  pushManifest(ref: Reference, desc: Descriptor, body: Uint8Array, signal?: AbortSignal): Promise<void>;
}
