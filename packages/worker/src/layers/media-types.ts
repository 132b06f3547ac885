import { InvalidArgumentError } from '@kiln/common';

export type LayerCompression = 'gzip' | 'zstd' | 'uncompressed';

const OCI: Record<LayerCompression, string> = {
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  uncompressed: 'application/vnd.oci.image.layer.v1.tar',
};

const DOCKER: Record<LayerCompression, string> = {
  gzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  // Docker schema 2 has no zstd layer type; BuildKit writes the OCI one there too.
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  uncompressed: 'application/vnd.docker.image.rootfs.diff.tar',
};

/** The layer media type for a compression in OCI or Docker schema 2 naming. */
export function layerMediaType(compression: LayerCompression, oci: boolean): string {
  return (oci ? OCI : DOCKER)[compression];
}

/** How a layer of `mediaType` is compressed, or undefined for a type that is not a known layer tar. */
export function compressionOfMediaType(mediaType: string): LayerCompression | undefined {
  const t = mediaType.toLowerCase();
  if (t.endsWith('+zstd') || t.endsWith('.tar.zstd')) return 'zstd';
  if (t.endsWith('+gzip') || t.endsWith('.tar.gzip') || t.endsWith('.tar.gz')) return 'gzip';
  if (t.endsWith('.tar') || t.endsWith('.v1.tar')) return 'uncompressed';
  return undefined;
}

/** The request's compression name ("" means gzip); InvalidArgumentError naming `compression` otherwise. */
export function parseCompression(name: string): LayerCompression {
  if (name === '' || name === 'gzip') return 'gzip';
  if (name === 'zstd' || name === 'uncompressed') return name;
  throw new InvalidArgumentError(`unknown layer compression "${name}" (want gzip, zstd or uncompressed)`, 'compression');
}

/** The codec level to use: 0 means the codec's default; out-of-range levels are refused naming `compression_level`. */
export function compressionLevel(compression: LayerCompression, level: number): number {
  const [lo, hi, dflt] = compression === 'gzip' ? [1, 9, 6] : compression === 'zstd' ? [1, 22, 3] : [0, 0, 0];
  if (level === 0 || compression === 'uncompressed') return dflt;
  if (!Number.isInteger(level) || level < lo || level > hi) {
    throw new InvalidArgumentError(`compression level ${level} is out of range for ${compression} (${lo}..${hi})`, 'compression_level');
  }
  return level;
}
