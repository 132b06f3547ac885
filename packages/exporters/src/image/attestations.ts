import { MediaType, type Descriptor } from '@kiln/registry';
import type { ExporterContext, ExportSource } from '../exporter.js';
import { manifestRefLabels, type AssembledImage } from './assemble.js';
import type { BlobStore } from './blob-store.js';
import type { ExportedImage } from './image-index.js';

/** BuildKit's annotations on an attestation manifest's entry in the image index. */
export const ATTESTATION_REF_TYPE = 'vnd.docker.reference.type';
export const ATTESTATION_REF_DIGEST = 'vnd.docker.reference.digest';
export const IN_TOTO_MEDIA_TYPE = 'application/vnd.in-toto+json';
export const PREDICATE_TYPE_ANNOTATION = 'in-toto.io/predicate-type';
export const SLSA_PROVENANCE_V02 = 'https://slsa.dev/provenance/v0.2';
/** An SPDX SBOM statement's predicate type (BuildKit's `--sbom`). */
export const SPDX_DOCUMENT = 'https://spdx.dev/Document';
export const IN_TOTO_STATEMENT_V01 = 'https://in-toto.io/Statement/v0.1';

/** One predicate to attest about an image of an export. */
export interface Predicate {
  type: string;
  /** The predicate JSON. */
  body: unknown;
}

/** `pkg:docker/NAME@TAG?platform=os%2Farch` subjects, as BuildKit names them (one per image name, or the digest alone). */
function subjects(image: AssembledImage, names: readonly string[]): { name: string; digest: Record<string, string> }[] {
  const platform = encodeURIComponent([image.platform.os, image.platform.architecture, image.platform.variant].filter(Boolean).join('/'));
  const hex = image.manifest.descriptor.digest.replace(/^sha256:/, '');
  const list = names.length > 0 ? names : [''];
  return list.map((n) => {
    const colon = n.lastIndexOf(':');
    const slash = n.lastIndexOf('/');
    const [repo, tag] = colon > slash ? [n.slice(0, colon), n.slice(colon + 1)] : [n, 'latest'];
    return { name: n ? `pkg:docker/${repo}@${tag}?platform=${platform}` : `_`, digest: { sha256: hex } };
  });
}

/**
 * Attaches in-toto attestations to an export as BuildKit does: for each
 * image an attestation manifest (OCI; config `unknown/unknown`; one
 * `application/vnd.in-toto+json` layer per predicate, each a Statement
 * naming the image manifest as subject), listed in the image index with
 * platform unknown/unknown and the annotations
 * `vnd.docker.reference.type: attestation-manifest` and
 * `vnd.docker.reference.digest: <image manifest>`. A single-platform export
 * becomes an index. Blobs are written under `lease`; the attestation
 * manifests are returned in `attestations` (pushed by digest like images).
 */
export async function attachAttestations(
  exported: ExportedImage,
  /** The predicates of the export's image `i` (in `exported.images` order); an image with none gets no attestation manifest. */
  predicates: (i: number) => readonly Predicate[],
  names: readonly string[],
  store: BlobStore,
  lease: string,
  ctx: Pick<ExporterContext, 'signal'>,
): Promise<ExportedImage & { attestations: AssembledImage[] }> {
  const attestations: AssembledImage[] = [];
  const entries: Descriptor[] = [];
  for (const [i, image] of exported.images.entries()) {
    const mine = predicates(i);
    if (mine.length === 0) continue;
    const layers = [];
    for (const p of mine) {
      const statement = { _type: IN_TOTO_STATEMENT_V01, predicateType: p.type, subject: subjects(image, names), predicate: p.body };
      const bytes = Buffer.from(JSON.stringify(statement));
      const blob = await store.put(bytes, { lease }, ctx.signal);
      layers.push({ mediaType: IN_TOTO_MEDIA_TYPE, digest: blob.digest, size: blob.size, annotations: { [PREDICATE_TYPE_ANNOTATION]: p.type } });
    }
    const config = { architecture: 'unknown', os: 'unknown', config: {}, rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) } };
    const configBytes = Buffer.from(JSON.stringify(config));
    const configBlob = await store.put(configBytes, { lease }, ctx.signal);
    const configDesc: Descriptor = { mediaType: MediaType.OciConfig, digest: configBlob.digest, size: configBlob.size };
    const manifest = { schemaVersion: 2, mediaType: MediaType.OciManifest, config: configDesc, layers };
    const manifestBytes = Buffer.from(JSON.stringify(manifest));
    const manifestBlob = await store.put(manifestBytes, { lease, labels: manifestRefLabels(configDesc, layers) }, ctx.signal);
    const descriptor: Descriptor = { mediaType: MediaType.OciManifest, digest: manifestBlob.digest, size: manifestBlob.size };
    attestations.push({
      manifest: { descriptor, bytes: manifestBytes },
      config: { descriptor: configDesc, bytes: configBytes },
      layers: layers.map((l) => ({ digest: l.digest, size: l.size, mediaType: l.mediaType, diffId: l.digest, fromBase: false, createdBy: '', timestampsRewritten: false })),
      platform: { os: 'unknown', architecture: 'unknown' },
    });
    entries.push({
      ...descriptor,
      platform: { os: 'unknown', architecture: 'unknown' },
      annotations: { [ATTESTATION_REF_DIGEST]: image.manifest.descriptor.digest, [ATTESTATION_REF_TYPE]: 'attestation-manifest' },
    });
  }
  // The index: the export's own (its entries kept as they are), or a new one over the single image.
  const base: Record<string, unknown> = exported.isIndex
    ? (JSON.parse(exported.top.bytes.toString('utf8')) as Record<string, unknown>)
    : {
        schemaVersion: 2,
        mediaType: MediaType.OciIndex,
        manifests: [{ ...exported.images[0]!.manifest.descriptor, platform: platformOf(exported.images[0]!) }],
      };
  const manifests = [...(base.manifests as Descriptor[]), ...entries];
  const index = { ...base, mediaType: MediaType.OciIndex, manifests };
  const bytes = Buffer.from(JSON.stringify(index));
  const labels = Object.fromEntries(manifests.map((m, i) => [`containerd.io/gc.ref.content.m.${i}`, m.digest]));
  const blob = await store.put(bytes, { lease, labels }, ctx.signal);
  return { top: { descriptor: { mediaType: MediaType.OciIndex, digest: blob.digest, size: blob.size }, bytes }, images: exported.images, isIndex: true, attestations };
}

function platformOf(image: AssembledImage): { os: string; architecture: string; variant?: string } {
  return { architecture: image.platform.architecture, os: image.platform.os, ...(image.platform.variant ? { variant: image.platform.variant } : {}) };
}

/**
 * The predicates an export carries, per image (in `platforms` order, or the
 * one result): the build's provenance (about every image) and each
 * result's SPDX document.
 */
export function exportPredicates(src: Pick<ExportSource, 'provenance' | 'platforms' | 'sbom'>): { any: boolean; of: (i: number) => Predicate[] } {
  const provenance: Predicate[] = src.provenance?.length ? [{ type: SLSA_PROVENANCE_V02, body: JSON.parse(Buffer.from(src.provenance).toString('utf8')) as unknown }] : [];
  const sboms = (src.platforms ?? [src]).map((p): Predicate[] => (p.sbom?.length ? [{ type: SPDX_DOCUMENT, body: JSON.parse(Buffer.from(p.sbom).toString('utf8')) as unknown }] : []));
  return { any: provenance.length > 0 || sboms.some((x) => x.length > 0), of: (i) => [...provenance, ...(sboms[i] ?? [])] };
}
