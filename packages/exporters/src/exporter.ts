import type { FileHandle } from 'node:fs/promises';
import type { Logger } from '@kiln/common';
import type { RegistryClient } from '@kiln/registry';
import type { BlobStore } from './image/blob-store.js';
import type { LayerDescriptor, LayerRequest } from './image/layers.js';

/** One build result: its files, its layers and the frontend's image config. */
export interface ResultSource {
  /** The result's filesystem as a tar stream (read once). Empty result: an empty tar. */
  openTar(signal?: AbortSignal): AsyncIterable<Uint8Array>;
  /**
   * The result's layer chain, base layers first, as blobs the worker wrote
   * to the content store under `req.lease` (WorkerService.GetLayers). An
   * empty (scratch) result has no layers.
   */
  getLayers(req: LayerRequest, signal?: AbortSignal): Promise<LayerDescriptor[]>;
  /** SPDX 2.3 JSON of the result's packages (`--sbom`), which the image exporter attaches to its image; absent: none. */
  sbom?: Uint8Array;
  /** The OCI image config JSON from the frontend, if any. */
  imageConfig: Uint8Array;
}

/** One target platform's result of a multi-platform build. */
export interface PlatformResultSource extends ResultSource {
  /** "os/arch[/variant]". */
  platform: string;
}

/**
 * What an exporter gets to work with for one build. A multi-platform build
 * sets `platforms` (two or more, in build order); the top-level result is
 * then the first platform's. Image exporters make an index of them, file
 * exporters one folder per platform.
 */
export interface ExportSource extends ResultSource {
  buildId: string;
  sessionId: string;
  platforms?: PlatformResultSource[];
  /** SLSA provenance v0.2 predicate (JSON) the solver made; the image exporter attaches it as an attestation manifest. */
  provenance?: Uint8Array;
}

/**
 * A content-store blob inside an output stream (a layer in an OCI/docker
 * layout tar): `read()` streams it through the store (size checked against
 * the descriptor); `open()`, when the store runs in this process, gives its
 * file, which a local write copies in the kernel instead.
 */
export interface BlobSpan {
  readonly kind: 'blob';
  readonly digest: string;
  readonly size: number;
  read(): AsyncIterable<Uint8Array>;
  open?(): Promise<FileHandle>;
}

/** What an output stream carries: bytes, or a blob to copy whole. */
export type OutputChunk = Uint8Array | BlobSpan;

/** Where exporters deliver to the client: the build's session. */
export interface ClientOutputs {
  /** Streams bytes to the client's output `outputId`; resolves with the bytes written. */
  write(sessionId: string, outputId: string, data: AsyncIterable<OutputChunk>, signal?: AbortSignal): Promise<number>;
}

export interface ExporterContext {
  outputs: ClientOutputs;
  /** The content store (image exporters); absent when the tier runs without one. */
  content?: BlobStore;
  /** Registry access for pushes (image exporter); absent when the tier has none. */
  registry?: RegistryClient;
  logger: Logger;
  signal?: AbortSignal;
}

/**
 * An exporter turns a result into one kind of output. `resolve` validates
 * the user's attrs once (throwing InvalidArgumentError naming the attr) and
 * returns the instance; `export` delivers and returns response metadata
 * (e.g. `containerimage.digest`) for --metadata-file.
 */
export interface Exporter {
  readonly type: string;
  resolve(attrs: Record<string, string>): ExporterInstance;
}

export interface ExporterInstance {
  export(src: ExportSource, ctx: ExporterContext): Promise<Record<string, string>>;
}
