/** One installed package found in a filesystem. */
export interface SbomPackage {
  /** Package ecosystem: "deb", "apk", "npm", "pypi". */
  type: 'deb' | 'apk' | 'npm' | 'pypi';
  name: string;
  version: string;
  /** Package URL (purl spec), e.g. `pkg:deb/debian/bash@5.2-1?arch=amd64`. */
  purl: string;
  /** The database or metadata file it was read from. */
  location: string;
  /** Declared license as written by the package, when any. */
  license?: string;
  /** Maintainer or author, when any. */
  supplier?: string;
  /** Source package (deb `Source:`, apk `o:` origin), when it differs from the name. */
  source?: string;
  arch?: string;
}
