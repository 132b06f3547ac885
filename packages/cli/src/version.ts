/** The CLI's version; kept equal to packages/cli/package.json (version.spec.ts checks it). */
export const KILN_VERSION = '0.1.0';
