import { distributionSources, formatReference, type Descriptor, type Reference, type RegistryClient } from '@kiln/registry';
import type { AssembledImage } from './assemble.js';
import type { BlobStore } from './blob-store.js';
import type { ExportedImage } from './image-index.js';

/** Layers uploaded at once per push. */
const PUSH_CONCURRENCY = 3;

/**
 * Pushes an image to `ref`'s repository: layers (HEAD first, skipped when
 * present; mounted from another repository of the same registry when the
 * content store's `containerd.io/distribution.source.<host>` label says a
 * pull found it there; a few at once), config, then the manifest under the
 * tag, or by digest only when `byDigest`.
 */
export async function pushImage(registry: RegistryClient, ref: Reference, image: AssembledImage, store: BlobStore, opts: { byDigest: boolean; signal?: AbortSignal }): Promise<void> {
  const queue = [...new Map(image.layers.map((l) => [l.digest, { mediaType: l.mediaType, digest: l.digest, size: l.size } as Descriptor])).values()];
  const worker = async () => {
    for (let desc = queue.shift(); desc; desc = queue.shift()) {
      const d = desc;
      const mountFrom = distributionSources(await store.labels(d.digest, opts.signal), ref.domain).filter((repo) => repo !== ref.path);
      await registry.pushBlob(ref, d, () => store.read(d.digest, opts.signal), opts.signal, mountFrom.length ? { mountFrom } : undefined);
    }
  };
  await Promise.all(Array.from({ length: Math.min(PUSH_CONCURRENCY, queue.length) }, worker));
  const config = image.config.bytes;
  await registry.pushBlob(
    ref,
    image.config.descriptor,
    async function* () {
      yield config;
    },
    opts.signal,
  );
  const target: Reference = opts.byDigest ? { domain: ref.domain, path: ref.path } : { ...ref, digest: undefined };
  await registry.pushManifest(target, image.manifest.descriptor, image.manifest.bytes, opts.signal);
}

/**
 * Pushes what an export made: the image, or for an index each platform's
 * image by digest and then the index under the tag (or by digest only).
 */
export async function pushExport(registry: RegistryClient, ref: Reference, exported: ExportedImage, store: BlobStore, opts: { byDigest: boolean; signal?: AbortSignal }): Promise<void> {
  if (!exported.isIndex) return pushImage(registry, ref, exported.images[0]!, store, opts);
  for (const image of [...exported.images, ...(exported.attestations ?? [])]) await pushImage(registry, ref, image, store, { byDigest: true, signal: opts.signal });
  const target: Reference = opts.byDigest ? { domain: ref.domain, path: ref.path } : { ...ref, digest: undefined };
  await registry.pushManifest(target, exported.top.descriptor, exported.top.bytes, opts.signal);
}

/** `name@digest` for `ref`'s repository: the canonical name of the pushed manifest. */
export function canonicalName(ref: Reference, digest: string): string {
  return formatReference({ domain: ref.domain, path: ref.path, digest });
}
