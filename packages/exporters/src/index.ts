export type { Exporter, ExporterInstance, ExportSource, ResultSource, PlatformResultSource, ExporterContext, ClientOutputs, BlobSpan, OutputChunk } from './exporter.js';
export { localExporter, tarExporter } from './session-output.js';
export { ociExporter, dockerExporter } from './oci/layout-exporter.js';
export { imageExporter } from './image/image-exporter.js';
export { contentBlobStore, type BlobStore, type LocalBlobFiles, type WrittenBlob } from './image/blob-store.js';
export type { LayerDescriptor, LayerRequest } from './image/layers.js';
export { compileImageOptions, type ImageOptions, type Annotations, type Compression } from './image/image-options.js';
export { buildImageConfig, GENERATED_HISTORY_COMMENT } from './image/image-config.js';
export { GC_ROOT_LABEL, IMAGE_NAME_LABEL_PREFIX, findImage } from './image/image-store.js';
export { createExporterServiceImpl, type ExporterServiceOptions } from './rpc/exporter-service.js';

import { localExporter, tarExporter } from './session-output.js';
import { ociExporter, dockerExporter } from './oci/layout-exporter.js';
import { imageExporter } from './image/image-exporter.js';
import type { Exporter } from './exporter.js';

/** Every exporter this tier ships. */
export const builtinExporters: readonly Exporter[] = [localExporter, tarExporter, ociExporter, dockerExporter, imageExporter];
export { localWriteTarget, openLocalWrite, writeLocal, LOCAL_WRITE_PATH_ATTR, LOCAL_WRITE_TOKEN_ATTR } from './local-write.js';
