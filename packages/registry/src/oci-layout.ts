import { createHash } from 'node:crypto';
import { KilnError, NotFoundError } from '@kiln/common';
import { parseManifest, type Descriptor, type ImageIndex, type ImageManifest } from './media.js';
import { chooseManifest, type Platform } from './platform.js';

/** The index.json annotation that names a manifest's tag. */
export const LAYOUT_REF_NAME = 'org.opencontainers.image.ref.name';

/** The tag looked up when a layout reference names neither a tag nor a digest (buildx's default). */
export const DEFAULT_LAYOUT_TAG = 'latest';

/** Biggest index.json, manifest or config read into memory. */
export const LAYOUT_DOC_MAX = 8 * 1024 * 1024;

/**
 * A reference into an OCI image layout, as written after `oci-layout://`:
 * `PATH[:TAG][@sha256:DIGEST]`. PATH is a client path (CLI side) or a
 * session store name (daemon side).
 */
export interface LayoutRef {
  path: string;
  /** Set when written; `DEFAULT_LAYOUT_TAG` applies when neither tag nor digest is. */
  tag?: string;
  digest?: string;
}

const DIGEST = /^sha256:[0-9a-f]{64}$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

/**
 * Splits `PATH[:TAG][@DIGEST]`. A tag is the part after the last ':' that
 * follows the last '/'. Throws InvalidArgument-style KilnErrors naming the
 * value for a malformed digest or tag, or an empty path.
 */
export function parseLayoutRef(value: string): LayoutRef {
  let rest = value;
  let digest: string | undefined;
  const at = rest.lastIndexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw new KilnError('invalid_argument', `invalid oci-layout reference "${value}": "${digest}" is not a sha256 digest`);
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw new KilnError('invalid_argument', `invalid oci-layout reference "${value}": invalid tag "${tag}"`);
  }
  if (rest === '') throw new KilnError('invalid_argument', `invalid oci-layout reference "${value}": no layout path`);
  return { path: rest, ...(tag !== undefined ? { tag } : {}), ...(digest !== undefined ? { digest } : {}) };
}

/** `PATH[:TAG][@DIGEST]` again. */
export function formatLayoutRef(ref: LayoutRef): string {
  return `${ref.path}${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest !== undefined ? `@${ref.digest}` : ''}`;
}

/** The path of a blob inside a layout (digest checked first, so it never escapes the layout). */
export function layoutBlobPath(digest: string): string {
  if (!DIGEST.test(digest)) throw new KilnError('invalid_argument', `invalid blob digest "${digest}"`);
  return `blobs/sha256/${digest.slice('sha256:'.length)}`;
}

/** Reads a layout's small documents; each resolves undefined when the file is absent. */
export interface LayoutReader {
  /** `index.json`. */
  readIndex(signal?: AbortSignal): Promise<Uint8Array | undefined>;
  /** `blobs/sha256/<hex>` (small blobs: manifests, indexes, configs). */
  readBlob(digest: string, signal?: AbortSignal): Promise<Uint8Array | undefined>;
}

/** Parses index.json; `what` prefixes errors (e.g. `build context "base" (/tmp/layout)`). */
export function parseLayoutIndex(bytes: Uint8Array | undefined, what: string): ImageIndex {
  if (bytes === undefined) throw new NotFoundError(`${what}: index.json not found: not an OCI image layout`);
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (err) {
    throw new KilnError('failed_precondition', `${what}: index.json is not valid JSON`, {}, { cause: err });
  }
  const manifests = (doc as { manifests?: unknown } | null)?.manifests;
  if (!Array.isArray(manifests) || !manifests.every((m) => m && typeof m === 'object' && typeof (m as Descriptor).digest === 'string')) {
    throw new KilnError('failed_precondition', `${what}: index.json has no valid "manifests" list`);
  }
  return doc as ImageIndex;
}

/**
 * The index.json entry a reference names: with a digest, the entry of that
 * digest (or a bare descriptor of it: any blob of the layout may be named);
 * else the entry whose `org.opencontainers.image.ref.name` is the tag
 * (default "latest"); without an explicit tag, an index of exactly one
 * entry gives that entry (as buildx). NotFoundError lists the tags there are.
 */
export function findLayoutManifest(index: ImageIndex, ref: Pick<LayoutRef, 'tag' | 'digest'>, what: string): Descriptor {
  if (ref.digest !== undefined) {
    return index.manifests.find((m) => m.digest === ref.digest) ?? { mediaType: '', digest: ref.digest, size: -1 };
  }
  const tag = ref.tag ?? DEFAULT_LAYOUT_TAG;
  const hit = index.manifests.find((m) => m.annotations?.[LAYOUT_REF_NAME] === tag);
  if (hit) return hit;
  if (ref.tag === undefined && index.manifests.length === 1) return index.manifests[0]!;
  const tags = index.manifests.map((m) => m.annotations?.[LAYOUT_REF_NAME]).filter((t): t is string => typeof t === 'string');
  throw new NotFoundError(`${what}: tag "${tag}" not found in index.json (tags: ${tags.length ? tags.join(', ') : 'none'})`, { tag });
}

/** Throws failed_precondition when `bytes` do not hash to `desc.digest` (or differ from its size, when known). */
export function verifyLayoutBlob(bytes: Uint8Array, desc: Pick<Descriptor, 'digest' | 'size'>, what: string): void {
  const got = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  if (got !== desc.digest) throw new KilnError('failed_precondition', `${what}: blob ${desc.digest} does not match its digest (got ${got})`, { digest: desc.digest });
  if (desc.size >= 0 && bytes.byteLength !== desc.size) {
    throw new KilnError('failed_precondition', `${what}: blob ${desc.digest} is ${bytes.byteLength} bytes, the descriptor says ${desc.size}`, { digest: desc.digest });
  }
}

/** Reads one small blob and checks it against its digest; NotFoundError when the layout lacks it. */
export async function readLayoutBlob(reader: LayoutReader, desc: Pick<Descriptor, 'digest' | 'size'>, what: string, signal?: AbortSignal): Promise<Uint8Array> {
  const bytes = await reader.readBlob(desc.digest, signal);
  if (bytes === undefined) throw new NotFoundError(`${what}: blob ${desc.digest} not found under ${layoutBlobPath(desc.digest)}`, { digest: desc.digest });
  verifyLayoutBlob(bytes, desc, what);
  return bytes;
}

/** A layout reference resolved for one platform. */
export interface ResolvedLayoutImage {
  /** What the reference names: an index or a manifest. */
  root: Descriptor;
  /** The platform's image manifest: its descriptor (digest = the cache key of the source) and content. */
  descriptor: Descriptor;
  manifest: ImageManifest;
}

/**
 * Resolves a layout reference to the image manifest for `platform`:
 * index.json → the tagged (or digest-named) entry → through at most two
 * indexes, the platform's manifest (Docker's matching, `chooseManifest`).
 * Every blob read is checked against its digest. Errors start with `what`.
 */
export async function resolveLayoutImage(
  reader: LayoutReader,
  ref: Pick<LayoutRef, 'tag' | 'digest'>,
  platform: Platform,
  what: string,
  signal?: AbortSignal,
): Promise<ResolvedLayoutImage> {
  const root = findLayoutManifest(parseLayoutIndex(await reader.readIndex(signal), what), ref, what);
  let desc = root;
  for (let depth = 0; depth < 3; depth++) {
    const bytes = await readLayoutBlob(reader, desc, what, signal);
    const parsed = parseManifest(bytes, desc.mediaType || undefined, `${what}: ${desc.digest}`);
    const descriptor: Descriptor = { ...desc, mediaType: parsed.mediaType, size: bytes.byteLength };
    if (parsed.kind === 'manifest') return { root: depth === 0 ? descriptor : root, descriptor, manifest: parsed.manifest };
    desc = chooseManifest(parsed.index, platform, what);
  }
  throw new KilnError('failed_precondition', `${what}: indexes nested too deep`);
}
