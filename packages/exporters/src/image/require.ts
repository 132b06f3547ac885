import { UnavailableError } from '@kiln/common';
import type { ExporterContext } from '../exporter.js';
import type { BlobStore } from './blob-store.js';

/** The content store an image exporter needs; UnavailableError naming the exporter when the tier has none. */
export function requireContent(ctx: ExporterContext, type: string): BlobStore {
  if (!ctx.content) throw new UnavailableError(`failed to export ${type}: the exporters tier has no content store configured`);
  return ctx.content;
}
