import { createHash } from 'node:crypto';
import { encodeTarHeader, readTarEntries, tarPadding, tarTrailer } from '@kiln/common';
import { IN_TOTO_STATEMENT_V01, SLSA_PROVENANCE_V02, SPDX_DOCUMENT, type Predicate } from './image/attestations.js';

/** The file each predicate is written to beside a local/tar result, as BuildKit names them. */
export const ATTESTATION_FILE_NAMES: Readonly<Record<string, string>> = {
  [SPDX_DOCUMENT]: 'sbom.spdx.json',
  [SLSA_PROVENANCE_V02]: 'provenance.json',
};

/**
 * The result's tar with one in-toto statement file per predicate added at
 * its root (`sbom.spdx.json`, `provenance.json`), as BuildKit's local and
 * tar exporters write attestations: each statement's subjects are the
 * result's regular files with their sha256, hashed as the tar streams by.
 * A result that already has a file of that name keeps its own (BuildKit
 * refuses the clash; a build output is not worth failing here).
 */
export async function* withStatementFiles(tar: AsyncIterable<Uint8Array>, predicates: readonly Predicate[]): AsyncIterable<Uint8Array> {
  if (predicates.length === 0) {
    yield* tar;
    return;
  }
  const subjects: { name: string; digest: { sha256: string } }[] = [];
  const names = new Set<string>();
  for await (const { header, body } of readTarEntries(tar)) {
    const rel = header.name.replace(/^\.?\/+/, '');
    names.add(rel);
    yield encodeTarHeader(header);
    const isFile = header.type === 'file' || header.type === 'contiguous-file';
    const hash = isFile ? createHash('sha256') : undefined;
    for await (const chunk of body) {
      hash?.update(chunk);
      yield chunk;
    }
    if (isFile) {
      yield tarPadding(header.size);
      subjects.push({ name: rel, digest: { sha256: hash!.digest('hex') } });
    }
  }
  for (const p of predicates) {
    const name = ATTESTATION_FILE_NAMES[p.type];
    if (!name || names.has(name)) continue;
    const data = Buffer.from(JSON.stringify({ _type: IN_TOTO_STATEMENT_V01, predicateType: p.type, subject: subjects, predicate: p.body }, null, 2));
    yield encodeTarHeader({ name, type: 'file', mode: 0o644, size: data.length, mtime: 0 });
    yield data;
    yield tarPadding(data.length);
  }
  yield tarTrailer();
}
