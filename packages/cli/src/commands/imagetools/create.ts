import { createHash } from 'node:crypto';
import { formatReference, MediaType, parseReference, type Descriptor, type Manifest, type Platform, type Reference, type RegistryClient } from '@kiln/registry';
import { escapeControl, KilnError } from '@kiln/common';
import type { CliIo } from '../../cli-io.js';
import { parseFlags } from '../../flags/flag-parser.js';
import { UsageError } from '../../flags/usage-error.js';
import { readJsonBlob } from './image-info.js';

export const IMAGETOOLS_CREATE_USAGE = `Usage:  kiln imagetools create [OPTIONS] [SOURCE...]

Create a new image index from existing manifests (blobs are mounted across repositories, never uploaded again)

Options:
      --annotation stringArray   Add annotation to the image index ("[index:]KEY=VALUE")
      --append                   Append to the existing manifest of the first tag
      --dry-run                  Show the final image index instead of pushing
  -h, --help                     Print usage
  -t, --tag stringArray          Set reference for the new image
`;

export const IMAGETOOLS_CREATE_FLAGS = {
  tag: { kind: 'list', short: 't' },
  append: { kind: 'bool' },
  'dry-run': { kind: 'bool' },
  annotation: { kind: 'list' },
  help: { kind: 'bool', short: 'h' },
} as const;

/** One manifest going into the new index, with where it lives now. */
interface Entry {
  source: Reference;
  descriptor: Descriptor;
}

const parseRef = (v: string, field: string): Reference => {
  try {
    return parseReference(v, field);
  } catch (err) {
    throw new UsageError((err as Error).message, field, { cause: err });
  }
};

/**
 * `kiln imagetools create -t REF [--append] [--dry-run] SOURCE...`: an image
 * index over the sources' manifests (an index source gives all its entries,
 * attestation manifests included; a manifest source one entry with the
 * platform of its config). Each manifest and its blobs are copied into the
 * target repository: blobs of the same registry by cross-repository mount
 * (nothing uploaded when the registry mounts), others streamed from their
 * source; then the index is pushed under each tag.
 */
export async function runImagetoolsCreate(argv: readonly string[], io: CliIo, client: () => RegistryClient): Promise<number> {
  const { flags, args } = parseFlags(argv, IMAGETOOLS_CREATE_FLAGS);
  if (flags.help) {
    io.stdout.write(IMAGETOOLS_CREATE_USAGE);
    return 0;
  }
  if (flags.tag.length === 0 && !flags['dry-run']) throw new UsageError('at least one --tag is needed (or --dry-run)', '--tag');
  const tags = flags.tag.map((t) => parseRef(t, '--tag'));
  if (args.length === 0 && !flags.append) throw new UsageError('no sources specified', 'SOURCE');
  if (flags.append && tags.length === 0) throw new UsageError('--append needs a --tag to append to', '--append');
  const annotations: Record<string, string> = {};
  for (const a of flags.annotation) {
    const m = /^(?:index:)?([^=:\s]+)=(.*)$/s.exec(a);
    if (!m) throw new UsageError(`invalid argument "${a}" for "--annotation" flag: expected [index:]KEY=VALUE`, '--annotation');
    annotations[m[1]!] = m[2]!;
  }
  const reg = client();
  // A bare digest means "this digest in the first tag's repository", as buildx reads it.
  const sources = args.map((s) => (/^sha256:[0-9a-f]{64}$/.test(s) && tags[0] ? { ...tags[0], tag: undefined, digest: s } : parseRef(s, 'SOURCE')));

  const entries: Entry[] = [];
  const add = (e: Entry) => {
    if (!entries.some((x) => x.descriptor.digest === e.descriptor.digest)) entries.push(e);
  };
  if (flags.append) {
    let current: Manifest | undefined;
    try {
      current = await reg.getManifest(tags[0]!, undefined, io.signal);
    } catch (err) {
      if (!(err instanceof KilnError && err.code === 'not_found')) throw err;
    }
    if (current) for (const e of await entriesOf(reg, tags[0]!, current, io.signal)) add(e);
  }
  for (const src of sources) {
    const m = await reg.getManifest(src, undefined, io.signal);
    for (const e of await entriesOf(reg, src, m, io.signal)) add(e);
  }

  const oci = entries.some((e) => e.descriptor.mediaType.startsWith('application/vnd.oci.')) || Object.keys(annotations).length > 0;
  const index = {
    schemaVersion: 2,
    mediaType: oci ? MediaType.OciIndex : MediaType.DockerManifestList,
    manifests: entries.map((e) => e.descriptor),
    ...(Object.keys(annotations).length > 0 ? { annotations } : {}),
  };
  const body = Buffer.from(JSON.stringify(index, null, 2));
  if (flags['dry-run']) {
    io.stdout.write(`${body.toString('utf8')}\n`);
    return 0;
  }
  const desc: Descriptor = { mediaType: index.mediaType, digest: `sha256:${createHash('sha256').update(body).digest('hex')}`, size: body.length };
  for (const target of tags) {
    for (const e of entries) await copyManifest(reg, e, target, io);
    await reg.pushManifest({ ...target, digest: undefined }, desc, body, io.signal);
    io.stderr.write(`pushed ${escapeControl(formatReference({ ...target, digest: undefined }))}@${desc.digest}\n`);
  }
  return 0;
}

/** The index entries `m` (read from `ref`) contributes. */
async function entriesOf(reg: RegistryClient, ref: Reference, m: Manifest, signal: AbortSignal): Promise<Entry[]> {
  if (m.kind === 'index') return m.index.manifests.map((d) => ({ source: ref, descriptor: d }));
  const config = (await readJsonBlob(reg, ref, m.manifest.config, signal)) as { os?: string; architecture?: string; variant?: string };
  const platform: Platform | undefined = config.os && config.architecture ? { os: config.os, architecture: config.architecture, ...(config.variant ? { variant: config.variant } : {}) } : undefined;
  return [{ source: ref, descriptor: { mediaType: m.mediaType, digest: m.descriptor.digest, size: m.descriptor.size, ...(platform ? { platform } : {}) } }];
}

/** Makes `e`'s manifest (and everything it names) present in `target`'s repository, by digest. */
async function copyManifest(reg: RegistryClient, e: Entry, target: Reference, io: CliIo): Promise<void> {
  const sameRepo = e.source.domain === target.domain && e.source.path === target.path;
  if (sameRepo) return;
  const src = { ...e.source, tag: undefined, digest: e.descriptor.digest };
  const m = await reg.getManifest(src, e.descriptor, io.signal);
  const blobs = m.kind === 'manifest' ? [m.manifest.config, ...m.manifest.layers] : [];
  if (m.kind === 'index') for (const d of m.index.manifests) await copyManifest(reg, { source: e.source, descriptor: d }, target, io);
  const mountFrom = e.source.domain === target.domain ? [e.source.path] : [];
  const dest = { ...target, tag: undefined, digest: undefined };
  for (const b of blobs) {
    const how = await reg.pushBlob(dest, b, () => reg.fetch(src, b, io.signal), io.signal, { mountFrom });
    io.stderr.write(`${how} ${b.digest}${how === 'mounted' ? ` from ${escapeControl(e.source.path)}` : ''}\n`);
  }
  await reg.pushManifest({ ...dest, digest: e.descriptor.digest }, { mediaType: m.mediaType, digest: m.descriptor.digest, size: m.descriptor.size }, m.bytes, io.signal);
}
