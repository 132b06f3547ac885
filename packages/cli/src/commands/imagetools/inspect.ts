import { formatPlatform, parseReference, type Manifest, type RegistryClient } from '@kiln/registry';
import type { CliIo } from '../../cli-io.js';
import { parseFlags } from '../../flags/flag-parser.js';
import { UsageError } from '../../flags/usage-error.js';
import { formatTable } from '../../progress/format.js';
import { renderGoTemplate } from './go-template.js';
import { readInspectData, type InspectData } from './image-info.js';

export const IMAGETOOLS_INSPECT_USAGE = `Usage:  kiln imagetools inspect [OPTIONS] NAME

Show details of an image in the registry

Options:
      --format string   Format the output using the given Go template (e.g. "{{json .Manifest}}", "{{json .Image}}", "{{json .Provenance}}", "{{json .SBOM}}")
  -h, --help            Print usage
      --raw             Show original, unformatted JSON manifest
`;

export const IMAGETOOLS_INSPECT_FLAGS = { format: { kind: 'string' }, raw: { kind: 'bool' }, help: { kind: 'bool', short: 'h' } } as const;

/** `kiln imagetools inspect NAME`: buildx's pretty view, `--raw` bytes, or a `--format` template over buildx's fields. */
export async function runImagetoolsInspect(argv: readonly string[], io: CliIo, client: () => RegistryClient): Promise<number> {
  const { flags, args } = parseFlags(argv, IMAGETOOLS_INSPECT_FLAGS);
  if (flags.help) {
    io.stdout.write(IMAGETOOLS_INSPECT_USAGE);
    return 0;
  }
  if (args.length !== 1) throw new UsageError(`"kiln imagetools inspect" requires exactly 1 argument (NAME), got ${args.length}`, 'NAME');
  if (flags.raw && flags.format !== undefined) throw new UsageError('--format and --raw cannot be used together', '--raw');
  let ref;
  try {
    ref = parseReference(args[0]!, 'NAME');
  } catch (err) {
    throw new UsageError((err as Error).message, 'NAME', { cause: err });
  }
  const format = flags.format;
  const uses = (field: string) => format !== undefined && new RegExp(`\\.${field}\\b`).test(format);
  const { data, manifest } = await readInspectData(client(), ref, { image: uses('Image'), attestations: uses('Provenance') || uses('SBOM') }, io.signal);
  if (flags.raw) {
    io.stdout.write(Buffer.from(manifest.bytes));
    return 0;
  }
  if (format !== undefined) {
    const text = renderGoTemplate(format, data);
    io.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
    return 0;
  }
  io.stdout.write(pretty(data, manifest));
  return 0;
}

/** buildx's default view: name, media type, digest and, for an index, each entry with its platform and annotations. */
function pretty(data: InspectData, m: Manifest): string {
  let out = formatTable([
    ['Name:', data.Name],
    ['MediaType:', m.mediaType],
    ['Digest:', m.descriptor.digest],
  ]);
  if (m.kind !== 'index') return out;
  const base = data.Name.replace(/[:@][^/]*$/, '');
  out += '\nManifests:\n';
  out += m.index.manifests
    .map((d) => {
      const rows = [
        ['Name:', `${base}@${d.digest}`],
        ['MediaType:', d.mediaType],
        ['Platform:', d.platform ? formatPlatform(d.platform) : 'unknown/unknown'],
      ];
      const ann = Object.entries(d.annotations ?? {}).sort(([a], [b]) => a.localeCompare(b));
      let entry = formatTable(rows);
      if (ann.length > 0) entry += `Annotations:\n${formatTable(ann.map(([k, v]) => [`  ${k}:`, v]))}`;
      return entry.replace(/^(?=.)/gm, '  ');
    })
    .join('\n');
  return out;
}
