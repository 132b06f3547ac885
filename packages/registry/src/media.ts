import { KilnError } from '@kiln/common';
import type { Platform } from './platform.js';

/** An OCI descriptor (media type, digest, size, optional platform). */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Platform;
  annotations?: Record<string, string>;
  urls?: string[];
  artifactType?: string;
}

/** The media types the client reads and writes. */
export const MediaType = {
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  DockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  OciManifest: 'application/vnd.oci.image.manifest.v1+json',
  OciIndex: 'application/vnd.oci.image.index.v1+json',
  DockerConfig: 'application/vnd.docker.container.image.v1+json',
  OciConfig: 'application/vnd.oci.image.config.v1+json',
  DockerLayer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  DockerForeignLayer: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  OciLayer: 'application/vnd.oci.image.layer.v1.tar',
  OciLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  OciLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
} as const;

/** Image manifests (one platform): Docker schema 2 and OCI. */
export const IMAGE_MANIFEST_TYPES: readonly string[] = [MediaType.OciManifest, MediaType.DockerManifest];
/** Multi-platform indexes: OCI index and Docker manifest list. */
export const INDEX_TYPES: readonly string[] = [MediaType.OciIndex, MediaType.DockerManifestList];
/** Every manifest type, in the order sent in `Accept`. */
export const MANIFEST_TYPES: readonly string[] = [...IMAGE_MANIFEST_TYPES, ...INDEX_TYPES];

export const isIndexType = (mediaType: string): boolean => INDEX_TYPES.includes(mediaType);
export const isImageManifestType = (mediaType: string): boolean => IMAGE_MANIFEST_TYPES.includes(mediaType);
export const isManifestType = (mediaType: string): boolean => MANIFEST_TYPES.includes(mediaType);

/** A single-platform image manifest (OCI or Docker schema 2). */
export interface ImageManifest {
  schemaVersion: 2;
  mediaType?: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

/** A multi-platform index (OCI index or Docker manifest list). */
export interface ImageIndex {
  schemaVersion: 2;
  mediaType?: string;
  artifactType?: string;
  manifests: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

/** A manifest or an index, parsed, with its media type settled. */
export type ParsedManifest =
  | { kind: 'manifest'; mediaType: string; manifest: ImageManifest }
  | { kind: 'index'; mediaType: string; index: ImageIndex };

/** Strips parameters ("; charset=utf-8") and lower-cases a Content-Type. */
export function baseMediaType(contentType: string | null | undefined): string {
  return (contentType ?? '').split(';')[0]!.trim().toLowerCase();
}

/**
 * Parses manifest bytes. The media type comes from `mediaType` (a
 * Content-Type or descriptor) when it is a manifest type, else from the
 * document's own `mediaType` field, else from its shape (`manifests` makes an
 * OCI index, `config` + `layers` an OCI manifest). Throws a KilnError
 * (failed_precondition) naming `what` for anything else, including Docker
 * schema 1.
 */
export function parseManifest(bytes: Uint8Array, mediaType?: string, what = 'manifest'): ParsedManifest {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch (err) {
    throw new KilnError('failed_precondition', `${what}: manifest is not valid JSON`, {}, { cause: err });
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw new KilnError('failed_precondition', `${what}: manifest is not a JSON object`);
  const obj = doc as Record<string, unknown>;
  const given = baseMediaType(mediaType);
  const own = typeof obj.mediaType === 'string' ? obj.mediaType : undefined;
  let type = isManifestType(given) ? given : own && isManifestType(own) ? own : undefined;
  if (!type) {
    if (obj.schemaVersion === 1 || given.includes('manifest.v1') || own?.includes('manifest.v1')) {
      throw new KilnError('failed_precondition', `${what}: Docker schema 1 manifests are not supported`);
    }
    if (Array.isArray(obj.manifests)) type = MediaType.OciIndex;
    else if (obj.config && Array.isArray(obj.layers)) type = MediaType.OciManifest;
    else throw new KilnError('failed_precondition', `${what}: unsupported manifest media type "${own ?? given}"`);
  }
  if (isIndexType(type)) {
    if (!Array.isArray(obj.manifests)) throw new KilnError('failed_precondition', `${what}: index has no manifests`);
    return { kind: 'index', mediaType: type, index: obj as unknown as ImageIndex };
  }
  if (!obj.config || typeof obj.config !== 'object' || !Array.isArray(obj.layers)) {
    throw new KilnError('failed_precondition', `${what}: manifest has no config or layers`);
  }
  return { kind: 'manifest', mediaType: type, manifest: obj as unknown as ImageManifest };
}
