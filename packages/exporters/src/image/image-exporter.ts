import { InvalidArgumentError, UnavailableError } from '@kiln/common';
import { formatReference, parseReference } from '@kiln/registry';
import type { Exporter } from '../exporter.js';
import { withExportLease } from './assemble.js';
import { attachAttestations, exportPredicates } from './attestations.js';
import { assembleExport, exportResponse } from './image-index.js';
import { rfc3339 } from './image-config.js';
import { boolAttr, compileImageOptions } from './image-options.js';
import { keepImage } from './image-store.js';
import { canonicalName, pushExport } from './push.js';
import { requireContent } from './require.js';

/**
 * type=image,name=REF[,REF2][,push=true][,push-by-digest=true][,name-canonical=true][,store=false]:
 * the image in the content store under its names (a GC root, so it
 * survives prune) and, with push, in registries; a multi-platform build
 * is an image index (the names point at it). Returns
 * `containerimage.digest`, `containerimage.descriptor`,
 * `containerimage.config.digest` and `image.name`.
 */
export const imageExporter: Exporter = {
  type: 'image',
  resolve(attrs) {
    const opts = compileImageOptions(attrs, { ociDefault: true });
    const push = boolAttr(attrs, 'push', false);
    const byDigest = boolAttr(attrs, 'push-by-digest', false);
    const nameCanonical = boolAttr(attrs, 'name-canonical', false);
    const keep = boolAttr(attrs, 'store', true);
    const refs = opts.names.map((n) => parseReference(n, 'name'));
    if (push && refs.length === 0) throw new InvalidArgumentError('push=true needs an image name (name=REF or -t/--tag)', 'name');
    const names = refs.map((r) => formatReference(r));
    return {
      async export(src, ctx) {
        const store = requireContent(ctx, 'image');
        return withExportLease(store, src.buildId, ctx.signal, async (lease) => {
          let image = await assembleExport(src, store, attrs, { ...opts, ociDefault: true }, lease, ctx);
          // Provenance is about the build (every image), an SBOM about one platform's result.
          const predicates = exportPredicates(src);
          if (predicates.any) image = await attachAttestations(image, predicates.of, names, store, lease, ctx);
          const digest = image.top.descriptor.digest;
          if (push) {
            if (!ctx.registry) throw new UnavailableError('failed to push: the exporters tier has no registry client configured');
            for (const ref of refs) {
              ctx.logger.info({ ref: formatReference(ref), digest }, 'pushing image');
              await pushExport(ctx.registry, ref, image, store, { byDigest, signal: ctx.signal });
            }
          }
          if (keep && names.length > 0) await keepImage(store, digest, names, rfc3339(Math.floor(Date.now() / 1000)), ctx.signal);
          const shown = byDigest ? refs.map((r) => formatReference({ domain: r.domain, path: r.path })) : opts.names;
          const all = nameCanonical ? [...shown, ...refs.map((r) => canonicalName(r, digest))] : shown;
          return exportResponse(image, [...new Set(all)]);
        });
      },
    };
  },
};
