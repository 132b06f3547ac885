import type { Platform } from './platform.js';

/** What a registry says about an image for one platform. */
export interface ImageMeta {
  /** The manifest digest the reference resolved to ("sha256:..."). */
  digest: string;
  /** The image config JSON, parsed (OCI / Docker schema 2). */
  config: unknown;
}

/**
 * Looks up base images while converting (FROM, COPY --from=IMAGE,
 * RUN --mount=from=IMAGE): the converter starts a stage from the image's
 * config and pins the digest in the source op, as BuildKit does. Injected so
 * the converter stays a pure library; the frontend tier implements it over
 * the registry client.
 */
export interface ImageMetaResolver {
  /** `ref` is normalized ("docker.io/library/alpine:3.19"). Throws when the image cannot be resolved. */
  resolve(ref: string, platform: Platform, signal?: AbortSignal): Promise<ImageMeta>;
  /**
   * `oci-layout://REF` named contexts: REF is `STORE[:TAG][@DIGEST]` (STORE a
   * layout the client shares). `digest` is the platform's manifest, which
   * the converter pins. Absent: layout sources stay unpinned, without config.
   */
  resolveOciLayout?(ref: string, platform: Platform, signal?: AbortSignal): Promise<ImageMeta>;
}
