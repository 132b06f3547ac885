import { formatPlatform, formatReference, type Descriptor, type Manifest, type Reference, type RegistryClient } from '@kiln/registry';
import { KilnError } from '@kiln/common';

/** BuildKit's annotations on an attestation manifest's descriptor in an image index. */
export const ATTESTATION_REF_TYPE = 'vnd.docker.reference.type';
export const ATTESTATION_REF_DIGEST = 'vnd.docker.reference.digest';
export const ATTESTATION_MANIFEST = 'attestation-manifest';
/** The in-toto predicate type annotation on an attestation layer. */
export const PREDICATE_TYPE = 'in-toto.io/predicate-type';
export const SLSA_PROVENANCE_V02 = 'https://slsa.dev/provenance/v0.2';
export const SLSA_PROVENANCE_V1 = 'https://slsa.dev/provenance/v1';
export const SPDX_DOCUMENT = 'https://spdx.dev/Document';

const MAX_JSON_BLOB = 16 << 20;

export const isAttestation = (d: Descriptor) => d.annotations?.[ATTESTATION_REF_TYPE] === ATTESTATION_MANIFEST;

/** What `imagetools inspect --format` templates see, with buildx's field names. */
export interface InspectData {
  Name: string;
  /** The manifest or index as stored, with its descriptor's digest and size. */
  Manifest: Record<string, unknown>;
  /** Image config: one, or by platform for an index. */
  Image?: unknown;
  /** `{SLSA: predicate}`: one, or by platform for an index. */
  Provenance?: unknown;
  /** `{SPDX: document}`: one, or by platform for an index. */
  SBOM?: unknown;
}

/** Reads a blob (config, attestation) as JSON, bounded; errors name the reference and digest. */
export async function readJsonBlob(client: RegistryClient, ref: Reference, desc: Descriptor, signal?: AbortSignal): Promise<unknown> {
  if (desc.size > MAX_JSON_BLOB) throw new KilnError('failed_precondition', `failed to read ${formatReference(ref)}@${desc.digest}: ${desc.size} bytes is too large for a JSON blob`);
  const chunks: Uint8Array[] = [];
  for await (const c of client.fetch({ ...ref, tag: undefined, digest: desc.digest }, desc, signal)) chunks.push(c);
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch (err) {
    throw new KilnError('failed_precondition', `failed to read ${formatReference(ref)}@${desc.digest}: not JSON`, {}, { cause: err });
  }
}

/** The manifest or index as buildx's `.Manifest` prints it: schemaVersion, mediaType, digest, size, then the rest. */
export function manifestView(m: Manifest): Record<string, unknown> {
  const doc = JSON.parse(Buffer.from(m.bytes).toString('utf8')) as Record<string, unknown>;
  const { schemaVersion, mediaType, ...rest } = doc;
  return { schemaVersion, mediaType: mediaType ?? m.mediaType, digest: m.descriptor.digest, size: m.descriptor.size, ...rest };
}

/** `{SLSA}` and `{SPDX}` predicates of the attestation manifest `att` (layers by predicate type). */
async function readAttestation(client: RegistryClient, ref: Reference, att: Descriptor, signal?: AbortSignal): Promise<{ provenance?: unknown; sbom?: unknown }> {
  const m = await client.getManifest({ ...ref, tag: undefined, digest: att.digest }, att, signal);
  if (m.kind !== 'manifest') return {};
  const out: { provenance?: unknown; sbom?: unknown } = {};
  for (const layer of m.manifest.layers) {
    const type = layer.annotations?.[PREDICATE_TYPE];
    if (type !== SLSA_PROVENANCE_V02 && type !== SLSA_PROVENANCE_V1 && type !== SPDX_DOCUMENT) continue;
    const statement = (await readJsonBlob(client, ref, layer, signal)) as { predicate?: unknown };
    if (type === SPDX_DOCUMENT) out.sbom = { SPDX: statement.predicate };
    else out.provenance = { SLSA: statement.predicate };
  }
  return out;
}

/**
 * Everything `--format` may ask about `ref`; configs and attestations are
 * read only when `want` says the template uses them.
 */
export async function readInspectData(
  client: RegistryClient,
  ref: Reference,
  want: { image: boolean; attestations: boolean },
  signal?: AbortSignal,
): Promise<{ data: InspectData; manifest: Manifest }> {
  const manifest = await client.getManifest(ref, undefined, signal);
  const data: InspectData = { Name: formatReference(ref), Manifest: manifestView(manifest) };
  if (!want.image && !want.attestations) return { data, manifest };
  if (manifest.kind === 'manifest') {
    if (want.image) data.Image = await readJsonBlob(client, ref, manifest.manifest.config, signal);
    return { data, manifest };
  }
  const images: Record<string, unknown> = {};
  const provenance: Record<string, unknown> = {};
  const sbom: Record<string, unknown> = {};
  const entries = manifest.index.manifests;
  const platformOf = new Map<string, string>();
  for (const d of entries) if (!isAttestation(d) && d.platform) platformOf.set(d.digest, formatPlatform(d.platform));
  for (const d of entries) {
    if (isAttestation(d)) {
      if (!want.attestations) continue;
      const subject = d.annotations?.[ATTESTATION_REF_DIGEST] ?? '';
      const key = platformOf.get(subject) ?? subject;
      const a = await readAttestation(client, ref, d, signal);
      if (a.provenance) provenance[key] = a.provenance;
      if (a.sbom) sbom[key] = a.sbom;
      continue;
    }
    if (!want.image) continue;
    const m = await client.getManifest({ ...ref, tag: undefined, digest: d.digest }, d, signal);
    if (m.kind === 'manifest') images[platformOf.get(d.digest) ?? d.digest] = await readJsonBlob(client, ref, m.manifest.config, signal);
  }
  // One platform reads as buildx shows a single image: the value, not a map.
  const single = (o: Record<string, unknown>) => (Object.keys(o).length === 1 ? Object.values(o)[0] : o);
  if (want.image) data.Image = single(images);
  if (want.attestations) {
    data.Provenance = single(provenance);
    data.SBOM = single(sbom);
  }
  return { data, manifest };
}
