import { createHash } from 'node:crypto';
import type { SbomPackage } from './package.js';
import type { ScanResult } from './scanner.js';

/** The in-toto predicate type of an SPDX SBOM, as BuildKit attaches it. */
export const SPDX_PREDICATE_TYPE = 'https://spdx.dev/Document';

export interface SpdxOptions {
  /** What the document describes (an image name, or "image"). */
  name: string;
  /** creationInfo.created; default now. SOURCE_DATE_EPOCH makes the document reproducible. */
  created?: Date;
}

/**
 * An SPDX 2.3 JSON document of the scanned packages: one SPDX package per
 * found package (name, versionInfo, purl external ref, declared license
 * when it reads as an SPDX expression, supplier, where it was found), each
 * DESCRIBED by the document. The namespace is derived from the content, so
 * the same packages and date give the same document.
 */
export function toSpdxDocument(scan: ScanResult, opts: SpdxOptions): Record<string, unknown> {
  const created = (opts.created ?? new Date()).toISOString().replace(/\.\d{3}Z$/, 'Z');
  const ids = new Set<string>();
  const packages = scan.packages.map((p) => {
    const id = uniqueId(`SPDXRef-Package-${p.type}-${sanitize(p.name)}-${shortHash(`${p.purl}|${p.location}`)}`, ids);
    return { id, p };
  });
  const body = {
    spdxVersion: 'SPDX-2.3',
    dataLicense: 'CC0-1.0',
    SPDXID: 'SPDXRef-DOCUMENT',
    name: opts.name,
    documentNamespace: '',
    creationInfo: {
      created,
      creators: ['Tool: kiln-sbom'],
      ...(scan.os ? { comment: `distribution: ${scan.os.prettyName ?? `${scan.os.id} ${scan.os.versionId ?? ''}`.trim()}` } : {}),
    },
    ...(scan.truncated ? { comment: 'The directory walk for language packages stopped at its limit: the list may be incomplete.' } : {}),
    packages: packages.map(({ id, p }) => spdxPackage(id, p)),
    relationships: packages.map(({ id }) => ({ spdxElementId: 'SPDXRef-DOCUMENT', relationshipType: 'DESCRIBES', relatedSpdxElement: id })),
  };
  body.documentNamespace = `https://kiln.invalid/spdx/${sanitize(opts.name)}-${shortHash(JSON.stringify(body), 32)}`;
  return body;
}

function spdxPackage(id: string, p: SbomPackage): Record<string, unknown> {
  return {
    name: p.name,
    SPDXID: id,
    versionInfo: p.version,
    ...(p.supplier ? { supplier: `Person: ${p.supplier.replace(/\s*<([^>]*)>/, ' ($1)').trim()}` } : {}),
    downloadLocation: 'NOASSERTION',
    filesAnalyzed: false,
    licenseConcluded: 'NOASSERTION',
    licenseDeclared: p.license && SPDX_EXPRESSION.test(p.license) ? p.license : 'NOASSERTION',
    copyrightText: 'NOASSERTION',
    ...(p.source ? { sourceInfo: `built from source package ${p.source}; found in ${p.location}` } : { sourceInfo: `found in ${p.location}` }),
    externalRefs: [{ referenceCategory: 'PACKAGE-MANAGER', referenceType: 'purl', referenceLocator: p.purl }],
  };
}

/** Simple SPDX license expressions (ids joined by AND/OR/WITH, optional parentheses); anything else is NOASSERTION. */
const SPDX_EXPRESSION = /^\(?[A-Za-z0-9.+-]+\)?(?: (?:AND|OR|WITH) \(?[A-Za-z0-9.+-]+\)?)*$/;

const sanitize = (s: string) => s.replace(/[^A-Za-z0-9.-]+/g, '-').replace(/^-+|-+$/g, '') || 'x';
const shortHash = (s: string, n = 8) => createHash('sha256').update(s).digest('hex').slice(0, n);

function uniqueId(id: string, seen: Set<string>): string {
  let out = id;
  for (let i = 2; seen.has(out); i++) out = `${id}-${i}`;
  seen.add(out);
  return out;
}
