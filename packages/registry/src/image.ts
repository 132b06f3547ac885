import { KilnError } from '@kiln/common';
import type { Descriptor, ImageIndex } from './media.js';
import { chooseManifest, type Platform } from './platform.js';
import { formatReference, type Reference } from './reference.js';
import type { Manifest, RegistryClient } from './registry.js';

/** An image reference resolved for one platform. */
export interface ResolvedImage {
  /** What the reference names: an index or a single manifest. */
  root: Descriptor;
  /** The index (OCI index or Docker manifest list) when the reference names one. */
  index?: ImageIndex;
  /** The manifest for the platform (verified bytes and parsed form). */
  manifest: Extract<Manifest, { kind: 'manifest' }>;
}

/**
 * Resolves `ref` to the image manifest for `platform`: reads what the
 * reference names and, for an index, picks the platform's entry with
 * `chooseManifest` (Docker's matching) and reads that manifest. A reference
 * naming a single manifest is returned as it is (its platform is in its
 * config, which the caller reads). Errors name the reference.
 */
export async function resolveImage(client: RegistryClient, ref: Reference, platform: Platform, signal?: AbortSignal): Promise<ResolvedImage> {
  const top = await client.getManifest(ref, undefined, signal);
  if (top.kind === 'manifest') return { root: top.descriptor, manifest: top };
  let index = top.index;
  let chosen = chooseManifest(index, platform, ref);
  for (let depth = 0; ; depth++) {
    const m = await client.getManifest(ref, chosen, signal);
    if (m.kind === 'manifest') return { root: top.descriptor, index: top.index, manifest: m };
    if (depth >= 2) break;
    index = m.index; // an index nested in an index
    chosen = chooseManifest(index, platform, ref);
  }
  throw new KilnError('failed_precondition', `failed to resolve ${formatReference(ref)}: indexes nested too deep`);
}
