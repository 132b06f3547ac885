import { encodeTarHeader, readTarEntries, tarPadding, tarTrailer } from '@kiln/common';

/** The folder of a platform's files in a multi-platform local/tar output: "linux/arm/v7" -> "linux_arm_v7". */
export function platformFolder(platform: string): string {
  return platform.replaceAll('/', '_');
}

/**
 * Several tars as one, each one's entries under its `prefix/` folder (a
 * directory entry for the folder first; hard-link targets moved along).
 * The parts are opened one after the other.
 */
export async function* prefixedTars(parts: readonly { prefix: string; open: () => AsyncIterable<Uint8Array> }[]): AsyncIterable<Uint8Array> {
  for (const part of parts) {
    yield encodeTarHeader({ name: `${part.prefix}/`, type: 'directory', mode: 0o755, mtime: 0 });
    for await (const { header, body } of readTarEntries(part.open())) {
      const rel = header.name.replace(/^\.?\/+/, '');
      if (rel === '' || rel === '.') continue; // the root: the folder entry stands for it
      const linkname = header.type === 'link' ? `${part.prefix}/${header.linkname.replace(/^\.?\/+/, '')}` : header.linkname;
      yield encodeTarHeader({ ...header, name: `${part.prefix}/${rel}`, linkname });
      for await (const chunk of body) yield chunk;
      if (header.type === 'file' || header.type === 'contiguous-file') yield tarPadding(header.size);
    }
  }
  yield tarTrailer();
}
