export type { SbomPackage } from './package.js';
export { scanFilesystem, type DirEntry, type FileAccess, type ScanOptions, type ScanResult } from './scanner.js';
export { parseApkInstalled, parseDebControl, parseNpmPackageJson, parseOsRelease, parsePythonMetadata, type OsRelease } from './parsers.js';
export { toSpdxDocument, SPDX_PREDICATE_TYPE, type SpdxOptions } from './spdx.js';
