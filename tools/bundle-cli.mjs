#!/usr/bin/env node
// Bundles the compiled CLI (packages/cli/dist/main.js and every workspace
// and npm module it imports) into one CommonJS file, packages/cli/dist/kiln-cli.bundle.cjs,
// which bin/kiln.mjs loads through bin/kiln-cli-loader.mjs, and writes
// V8's code cache for it (kiln-cli.bundle.cache, tools/cli-code-cache.mjs).
// Why: the CLI is a short-lived process (one per `kiln build`); resolving
// and compiling a few hundred small modules cost it about twice the CPU of
// loading one file, and compiling that file is still its largest cost
// without the cache. Run by the cli package's build.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(repo, 'packages', 'cli', 'dist');

// The id ties the code cache to this bundle (see bin/kiln-cli-loader.mjs).
const buildId = randomUUID();
rmSync(join(dist, 'kiln-cli.bundle.cache'), { force: true });
// The ES module bundle of earlier builds.
for (const old of ['kiln-cli.bundle.mjs', 'kiln-cli.bundle.mjs.map']) rmSync(join(dist, old), { force: true });
await build({
  entryPoints: [join(dist, 'main.js')],
  outfile: join(dist, 'kiln-cli.bundle.cjs'),
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  // Native addons cannot be bundled; the CLI must not need one. The HCL
  // parser (bake) loads its WebAssembly from its own directory: required at run time.
  external: ['better-sqlite3', '@cdktf/hcl2json'],
  // The loader passes the bundle's URL: CommonJS has no import.meta.
  define: { 'import.meta.url': '__kilnBundleUrl' },
  banner: { js: `/* kiln-cli-build ${buildId} */` },
  sourcemap: 'linked',
  logLevel: 'warning',
});
execFileSync(process.execPath, [join(repo, 'tools', 'cli-code-cache.mjs')], { stdio: 'inherit' });
