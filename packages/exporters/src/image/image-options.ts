import { InvalidArgumentError } from '@kiln/common';

export type Compression = 'gzip' | 'zstd' | 'uncompressed';

/** Where an `annotation*.KEY=V` attr puts its annotation. */
export interface Annotations {
  /** `annotation.KEY` and `annotation-manifest.KEY`: the image manifest. */
  manifest: Record<string, string>;
  /** `annotation-manifest-descriptor.KEY`: the manifest's descriptor in an index (index.json, image index). */
  manifestDescriptor: Record<string, string>;
  /** `annotation-index.KEY`: the index (index.json of a layout, an image index). */
  index: Record<string, string>;
  /** `annotation-index-descriptor.KEY`: the index's descriptor (multi-platform outputs only). */
  indexDescriptor: Record<string, string>;
}

/** The options every image-producing exporter (image, oci, docker) shares, compiled once from attrs. */
export interface ImageOptions {
  compression: Compression;
  /** 0: the codec's default. */
  compressionLevel: number;
  forceCompression: boolean;
  /** OCI media types (true) or Docker schema 2 ones (false). */
  ociMediaTypes: boolean;
  /** Seconds since the epoch, from the `source-date-epoch` attr (SOURCE_DATE_EPOCH build arg or env). */
  sourceDateEpoch: number | undefined;
  /** Clamp file mtimes in the layers Kiln makes to `sourceDateEpoch` (`rewrite-timestamp=true`; default off, as in BuildKit). */
  rewriteTimestamp: boolean;
  /** Image names from `name=` (comma-separated), as given. */
  names: string[];
  annotations: Annotations;
}

const BOOL: Record<string, boolean> = { true: true, '1': true, false: false, '0': false, '': true };

/** Parses `attr` as a boolean ("" means true, as BuildKit does for bare flags); throws naming the attr. */
export function boolAttr(attrs: Record<string, string>, key: string, dflt: boolean): boolean {
  const v = attrs[key];
  if (v === undefined) return dflt;
  const b = BOOL[v.toLowerCase()];
  if (b === undefined) throw new InvalidArgumentError(`invalid value "${v}" for ${key}: want true or false`, key);
  return b;
}

/** The names of `name=` (comma-separated, blanks dropped). */
export function nameList(value: string | undefined): string[] {
  return (value ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

const ANNOTATION = /^annotation(?:-(manifest|manifest-descriptor|index|index-descriptor))?(?:\[([^\]]*)\])?\.(.+)$/;

/**
 * The image options in `attrs`. `ociDefault` is the default of
 * `oci-mediatypes` (true for image and oci, false for docker).
 * `platform` (os/arch[/variant]) selects `annotation-*[PLATFORM].KEY` attrs.
 * Throws InvalidArgumentError naming the attr at fault.
 */
export function compileImageOptions(attrs: Record<string, string>, opts: { ociDefault: boolean; platform?: string }): ImageOptions {
  const compression = (attrs.compression ?? 'gzip') as Compression;
  if (!['gzip', 'zstd', 'uncompressed'].includes(compression)) {
    throw new InvalidArgumentError(`invalid value "${attrs.compression}" for compression: want gzip, zstd or uncompressed`, 'compression');
  }
  let compressionLevel = 0;
  if (attrs['compression-level'] !== undefined) {
    const v = attrs['compression-level'];
    const max = compression === 'zstd' ? 22 : 9;
    if (!/^-?\d+$/.test(v) || Number(v) < 0 || Number(v) > max) {
      throw new InvalidArgumentError(`invalid value "${v}" for compression-level: want an integer from 0 to ${max} for ${compression}`, 'compression-level');
    }
    compressionLevel = Number(v);
  }
  let sourceDateEpoch: number | undefined;
  const epoch = attrs['source-date-epoch'];
  if (epoch !== undefined && epoch !== '') {
    if (!/^\d{1,12}$/.test(epoch)) throw new InvalidArgumentError(`invalid value "${epoch}" for source-date-epoch (SOURCE_DATE_EPOCH): want whole seconds since the epoch`, 'source-date-epoch');
    sourceDateEpoch = Number(epoch);
  }
  const annotations: Annotations = { manifest: {}, manifestDescriptor: {}, index: {}, indexDescriptor: {} };
  for (const [k, v] of Object.entries(attrs)) {
    if (!k.startsWith('annotation')) continue;
    const m = ANNOTATION.exec(k);
    if (!m) throw new InvalidArgumentError(`invalid annotation attr "${k}": want annotation[-manifest|-manifest-descriptor|-index|-index-descriptor][[PLATFORM]].KEY=VALUE`, k);
    const [, where = 'manifest', platform, key] = m;
    if (platform !== undefined && platform !== '' && opts.platform !== undefined && platform !== opts.platform) continue;
    const target = where === 'manifest' ? annotations.manifest : where === 'manifest-descriptor' ? annotations.manifestDescriptor : where === 'index' ? annotations.index : annotations.indexDescriptor;
    target[key!] = v;
  }
  return {
    compression,
    compressionLevel,
    forceCompression: boolAttr(attrs, 'force-compression', false),
    ociMediaTypes: boolAttr(attrs, 'oci-mediatypes', opts.ociDefault),
    sourceDateEpoch,
    // Off unless asked for, as in BuildKit: an epoch alone fixes dates in the config, not file times.
    rewriteTimestamp: boolAttr(attrs, 'rewrite-timestamp', false),
    names: nameList(attrs.name),
    annotations,
  };
}
