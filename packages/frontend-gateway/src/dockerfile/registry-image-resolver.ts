import type { ImageMeta, ImageMetaResolver, Platform } from '@kiln/dockerfile';
import { parseReference, resolveImage, type CredentialStore, type RegistryClient } from '@kiln/registry';

export interface RegistryImageResolverOptions {
  /** How long a resolved ref+platform is reused; default 60 s (tags move). */
  ttlMs?: number;
  /** Most entries kept; default 256. */
  maxEntries?: number;
  now?: () => number;
}

/**
 * An ImageMetaResolver over the daemon's registry client, plus the
 * resolvers of single builds that use the build client's credentials.
 */
export interface RegistryImageResolver extends ImageMetaResolver {
  /**
   * The resolver one build uses: `credentials` (the build's client session)
   * are asked first, the daemon's store after. It shares this resolver's
   * cache, whose entries are keyed by the identity used for the registry,
   * so metadata one user may read is never served to another.
   */
  withCredentials(credentials: CredentialStore, opts?: ResolveOptions): ImageMetaResolver;
  /** This resolver without cached results (`--pull`). */
  fresh(): ImageMetaResolver;
}

export interface ResolveOptions {
  /**
   * Ask the registry even when a result is cached (`--pull`, BuildKit's
   * `image-resolve-mode=pull`): a tag moved since is seen at once. The
   * answer replaces the cached one.
   */
  fresh?: boolean;
}

interface CacheEntry {
  at: number;
  meta: Promise<ImageMeta>;
}

/**
 * ImageMetaResolver over the registry client: the digest is the root the
 * reference names (index or manifest, as BuildKit pins it) and the config
 * is the platform's image config. Results (not failures) are cached per
 * identity + ref + platform for `ttlMs`, and concurrent lookups share one
 * request.
 */
export function createRegistryImageResolver(registry: RegistryClient, opts: RegistryImageResolverOptions = {}): RegistryImageResolver {
  const ttl = opts.ttlMs ?? 60_000;
  const max = opts.maxEntries ?? 256;
  const now = opts.now ?? Date.now;
  const cache = new Map<string, CacheEntry>();
  const resolverOver = (client: RegistryClient, fresh = false): ImageMetaResolver => ({
    async resolve(ref: string, platform: Platform, signal?: AbortSignal): Promise<ImageMeta> {
      const parsed = parseReference(ref);
      const identity = await client.credentialsKeyFor(parsed.domain, signal);
      const key = `${identity} ${ref} ${platform.os}/${platform.architecture}/${platform.variant ?? ''}`;
      const hit = cache.get(key);
      if (hit && !fresh && now() - hit.at < ttl) return hit.meta;
      const meta = (async () => {
        const resolved = await resolveImage(client, parsed, platform, signal);
        const parts: Uint8Array[] = [];
        for await (const chunk of client.fetch(parsed, resolved.manifest.manifest.config, signal)) parts.push(chunk);
        const config: unknown = JSON.parse(Buffer.concat(parts).toString('utf8'));
        return { digest: resolved.root.digest, config };
      })();
      cache.set(key, { at: now(), meta });
      meta.catch(() => cache.delete(key));
      while (cache.size > max) cache.delete(cache.keys().next().value!);
      return meta;
    },
  });
  return {
    ...resolverOver(registry),
    withCredentials: (credentials, o) => resolverOver(registry.withCredentials(credentials), o?.fresh),
    fresh: () => resolverOver(registry, true),
  };
}
