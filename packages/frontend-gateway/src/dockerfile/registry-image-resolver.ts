import type { ImageMeta, ImageMetaResolver, Platform } from '@kiln/dockerfile';
import { parseReference, resolveImage, type RegistryClient } from '@kiln/registry';

export interface RegistryImageResolverOptions {
  /** How long a resolved ref+platform is reused; default 60 s (tags move). */
  ttlMs?: number;
  /** Most entries kept; default 256. */
  maxEntries?: number;
  now?: () => number;
}

/**
 * ImageMetaResolver over the registry client: the digest is the root the
 * reference names (index or manifest, as BuildKit pins it) and the config
 * is the platform's image config. Results (not failures) are cached per
 * ref + platform for `ttlMs`, and concurrent lookups share one request.
 */
export function createRegistryImageResolver(registry: RegistryClient, opts: RegistryImageResolverOptions = {}): ImageMetaResolver {
  const ttl = opts.ttlMs ?? 60_000;
  const max = opts.maxEntries ?? 256;
  const now = opts.now ?? Date.now;
  const cache = new Map<string, { at: number; meta: Promise<ImageMeta> }>();
  return {
    resolve(ref: string, platform: Platform, signal?: AbortSignal): Promise<ImageMeta> {
      const key = `${ref} ${platform.os}/${platform.architecture}/${platform.variant ?? ''}`;
      const hit = cache.get(key);
      if (hit && now() - hit.at < ttl) return hit.meta;
      const meta = (async () => {
        const parsed = parseReference(ref);
        const resolved = await resolveImage(registry, parsed, platform, signal);
        const parts: Uint8Array[] = [];
        for await (const chunk of registry.fetch(parsed, resolved.manifest.manifest.config, signal)) parts.push(chunk);
        const config: unknown = JSON.parse(Buffer.concat(parts).toString('utf8'));
        return { digest: resolved.root.digest, config };
      })();
      cache.set(key, { at: now(), meta });
      meta.catch(() => cache.delete(key));
      while (cache.size > max) cache.delete(cache.keys().next().value!);
      return meta;
    },
  };
}
