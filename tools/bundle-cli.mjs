#!/usr/bin/env node
// Bundles the compiled CLI (packages/cli/dist/main.js and every workspace
// and npm module it imports) into one ES module, packages/cli/dist/kiln-cli.bundle.mjs,
// which bin/kiln.mjs loads. Why: the CLI is a short-lived process (one per
// `kiln build`), and resolving and compiling a few hundred small modules cost
// it about twice the CPU of loading one file. Run by the cli package's build.
import { build } from 'esbuild';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(repo, 'packages', 'cli', 'dist');

await build({
  entryPoints: [join(dist, 'main.js')],
  outfile: join(dist, 'kiln-cli.bundle.mjs'),
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // Native addons cannot be bundled; the CLI must not need one. The HCL
  // parser (bake) loads its WebAssembly from its own directory: required at run time.
  external: ['better-sqlite3', '@cdktf/hcl2json'],
  // CommonJS dependencies call require(); give the ES module one.
  banner: { js: "import { createRequire as kilnCreateRequire } from 'node:module'; const require = kilnCreateRequire(import.meta.url);" },
  sourcemap: 'linked',
  logLevel: 'warning',
});
