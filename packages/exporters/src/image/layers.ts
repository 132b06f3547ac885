import type { Compression } from './image-options.js';

/** One layer of a result, as a content-store blob (WorkerService.GetLayers). */
export interface LayerDescriptor {
  digest: string;
  size: number;
  mediaType: string;
  /** Digest of the uncompressed tar (rootfs.diff_ids). */
  diffId: string;
  /** Came unchanged from a docker-image source. */
  fromBase: boolean;
  /** The op that made the diff (e.g. "RUN make"); empty when unknown. */
  createdBy: string;
  /** The worker clamped its file times to the source date epoch (rewrite-timestamp): it gets BuildKit's annotation. */
  timestampsRewritten: boolean;
  /** When the worker committed the layer's snapshot (ms since the epoch), when it knows: the history's time for the layer. */
  createdAtMs?: number;
}

export interface LayerRequest {
  compression: Compression;
  compressionLevel: number;
  forceCompression: boolean;
  ociMediaTypes: boolean;
  /** Clamp file mtimes in layers the worker makes (rewrite-timestamp). */
  sourceDateEpoch?: number;
  /** Content-store lease the blobs are added to. */
  lease: string;
}
