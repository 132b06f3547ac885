import { KilnError } from '@kiln/common';
import { parseReference } from '@kiln/registry';
import type { Exporter } from '../exporter.js';
import { withExportLease } from '../image/assemble.js';
import { attachAttestations, exportPredicates } from '../image/attestations.js';
import { assembleExport, exportResponse } from '../image/image-index.js';
import { rfc3339 } from '../image/image-config.js';
import { boolAttr, compileImageOptions } from '../image/image-options.js';
import { requireContent } from '../image/require.js';
import { sessionOutput } from '../session-output.js';
import { layoutTar, type LayoutFormat } from './layout-tar.js';

/**
 * type=oci|docker: the image as an OCI image layout tarball (docker: plus
 * the manifest.json `docker load` reads), streamed to the client's output
 * through the session. `tar=false` sends the same entries for the client
 * to unpack into a directory (its output kind decides). A multi-platform
 * build gives an image index (oci; docker refuses it, as buildx does).
 */
function layoutExporter(format: LayoutFormat): Exporter {
  return {
    type: format,
    resolve(attrs) {
      const outputId = sessionOutput(format, attrs);
      const opts = compileImageOptions(attrs, { ociDefault: format === 'oci' });
      boolAttr(attrs, 'tar', true); // validated here; the client picks file vs directory
      for (const n of opts.names) parseReference(n, 'name');
      return {
        async export(src, ctx) {
          if (format === 'docker' && src.platforms?.length) {
            throw new KilnError('failed_precondition', 'docker exporter does not currently support exporting manifest lists: build one platform, or use type=oci or type=image for a multi-platform build', {
              field: 'type=docker',
            });
          }
          const store = requireContent(ctx, format);
          return withExportLease(store, src.buildId, ctx.signal, async (lease) => {
            let image = await assembleExport(src, store, attrs, { ...opts, ociDefault: format === 'oci' }, lease, ctx);
            // As BuildKit's OCI exporter: attestations (--sbom, --provenance) are manifests in the layout's index.
            // A docker tarball stays one image (docker load reads no index).
            const predicates = exportPredicates(src);
            if (format === 'oci' && predicates.any) image = await attachAttestations(image, predicates.of, opts.names, store, lease, ctx);
            const tar = layoutTar(
              image,
              store,
              {
                format,
                names: opts.names,
                descriptorAnnotations: image.isIndex ? opts.annotations.indexDescriptor : opts.annotations.manifestDescriptor,
                indexAnnotations: image.isIndex ? {} : opts.annotations.index,
                created: rfc3339(opts.sourceDateEpoch ?? Math.floor(Date.now() / 1000)),
              },
              ctx.signal,
            );
            await ctx.outputs.write(src.sessionId, outputId, tar, ctx.signal);
            return exportResponse(image, opts.names);
          });
        },
      };
    },
  };
}

/** type=oci,dest=FILE|-[,tar=false]: an OCI image layout. */
export const ociExporter = layoutExporter('oci');
/** type=docker,dest=FILE|-: the tarball `docker load` accepts. */
export const dockerExporter = layoutExporter('docker');
