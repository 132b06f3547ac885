export type { Exporter, ExporterInstance, ExportSource, ExporterContext, ClientOutputs } from './exporter.js';
export { localExporter, tarExporter } from './session-output.js';
export { createExporterServiceImpl, type ExporterServiceOptions } from './rpc/exporter-service.js';

import { localExporter, tarExporter } from './session-output.js';
import type { Exporter } from './exporter.js';

/** Every exporter this tier ships. */
export const builtinExporters: readonly Exporter[] = [localExporter, tarExporter];
