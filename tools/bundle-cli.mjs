#!/usr/bin/env node
// Bundles the compiled CLI (packages/cli/dist/main.js and every workspace
// and npm module it imports) into one CommonJS file, packages/cli/dist/kiln-cli.bundle.cjs,
// which bin/kiln.mjs loads through bin/kiln-cli-loader.mjs, and writes
// V8's code cache for it (kiln-cli.bundle.cache, tools/cli-code-cache.mjs) and
// a start-up snapshot of it (kiln-cli.snapshot.blob, tools/cli-snapshot.mjs).
// Why: the CLI is a short-lived process (one per `kiln build`); resolving
// and compiling a few hundred small modules cost it about twice the CPU of
// loading one file, and compiling that file is still its largest cost
// without the cache. Run by the cli package's build.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { descriptorJson } from './cli-file-descriptors.mjs';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(repo, 'packages', 'cli', 'dist');

// The id ties the code cache to this bundle (see bin/kiln-cli-loader.mjs).
const buildId = randomUUID();
rmSync(join(dist, 'kiln-cli.bundle.cache'), { force: true });
for (const snapshot of ['kiln-cli.snapshot.node', 'kiln-cli.snapshot.blob']) rmSync(join(dist, snapshot), { force: true });
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
  plugins: [descriptorsAsJson()],
});
execFileSync(process.execPath, [join(repo, 'tools', 'cli-code-cache.mjs')], { stdio: 'inherit' });
// The start-up snapshot bin/kiln prefers when it matches the node binary (tools/cli-snapshot.mjs).
execFileSync(process.execPath, [join(repo, 'tools', 'cli-snapshot.mjs')], { stdio: 'inherit' });

/**
 * Rewrites each generated `*_pb.js` of packages/api so its file descriptor is
 * hydrated from JSON (tools/cli-file-descriptors.mjs) rather than decoded
 * from base64 at every CLI start. The JSON comes from the generated module
 * itself, loaded here: the descriptor fileDesc made from that very base64.
 */
function descriptorsAsJson() {
  const helper = join(repo, 'tools', 'cli-file-descriptors.mjs');
  return {
    name: 'kiln-descriptors-as-json',
    setup(b) {
      b.onLoad({ filter: /[\\/]packages[\\/]api[\\/]dist[\\/]gen[\\/].*_pb\.js$/ }, async (args) => {
        const source = readFileSync(args.path, 'utf8');
        const files = Object.entries(await import(pathToFileURL(args.path).href)).filter(([name]) => name.startsWith('file_'));
        const call = /\bfileDesc\("[A-Za-z0-9+/=]*"/g;
        const calls = source.match(call) ?? [];
        if (files.length !== 1 || calls.length !== 1) throw new Error(`${args.path}: expected one file descriptor, found ${files.length} exports and ${calls.length} fileDesc calls`);
        const contents = `import { fileDescFromJson } from ${JSON.stringify(helper)};\n` + source.replace(call, `fileDescFromJson(${JSON.stringify(descriptorJson(files[0][1]))}`);
        return { contents, loader: 'js', resolveDir: dirname(args.path) };
      });
    },
  };
}
