import type { ImageMeta, Platform } from '@kiln/dockerfile';
import { LAYOUT_DOC_MAX, layoutBlobPath, parseLayoutRef, readLayoutBlob, resolveLayoutImage, type LayoutReader } from '@kiln/registry';
import { KilnError } from '@kiln/common';
import type { FrontendInputs } from '../frontend.js';

/**
 * `ImageMetaResolver.resolveOciLayout` for one build: reads the layout the
 * client shares as session directory STORE (`oci-layout://STORE[:TAG][@DIGEST]`)
 * with ReadFile, index.json → manifest for the platform → config, every blob
 * checked against its digest. The digest returned is the platform manifest's.
 */
export function layoutMetaResolver(inputs: Pick<FrontendInputs, 'readFile'>): (ref: string, platform: Platform, signal?: AbortSignal) => Promise<ImageMeta> {
  return async (ref, platform, signal) => {
    const parsed = parseLayoutRef(ref);
    const reader: LayoutReader = {
      readIndex: () => inputs.readFile(parsed.path, 'index.json', LAYOUT_DOC_MAX),
      readBlob: (digest) => inputs.readFile(parsed.path, layoutBlobPath(digest), LAYOUT_DOC_MAX),
    };
    const what = 'OCI layout';
    const resolved = await resolveLayoutImage(reader, parsed, platform, what, signal);
    const bytes = await readLayoutBlob(reader, resolved.manifest.config, what, signal);
    let config: unknown;
    try {
      config = JSON.parse(Buffer.from(bytes).toString('utf8'));
    } catch (err) {
      throw new KilnError('failed_precondition', `${what}: image config ${resolved.manifest.config.digest} is not valid JSON`, {}, { cause: err });
    }
    return { digest: resolved.descriptor.digest, config };
  };
}
