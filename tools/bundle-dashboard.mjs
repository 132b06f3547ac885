#!/usr/bin/env node
// Builds the dashboard front end (packages/dashboard-ui) into its dist/:
// index.html and app.css copied, src/main.ts bundled with everything it
// imports (the generated Connect clients, connect-web, protobuf-es) into one
// ES module, app.js, for browsers. No CDN, no framework: kilnd serves these
// three files from memory (`kiln daemon --dashboard`). Run by the package's build.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

// A tree installed before the dashboard existed lacks its browser client: say so, not "could not resolve".
try {
  createRequire(import.meta.url).resolve('@connectrpc/connect-web');
} catch {
  console.error('dashboard-ui: @connectrpc/connect-web is not installed: run `npm install` (package-lock.json lists it)');
  process.exit(1);
}

const pkg = join(dirname(fileURLToPath(import.meta.url)), '..', 'packages', 'dashboard-ui');
const dist = join(pkg, 'dist');
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });
for (const f of ['index.html', 'app.css']) copyFileSync(join(pkg, 'src', f), join(dist, f));
const result = await build({
  entryPoints: [join(pkg, 'src', 'main.ts')],
  outfile: join(dist, 'app.js'),
  bundle: true,
  platform: 'browser',
  format: 'esm',
  target: ['chrome110', 'firefox110', 'safari16'],
  // Workspace packages from their TypeScript sources: no dependency on their tsc output.
  conditions: ['@kiln/source'],
  minify: true,
  legalComments: 'none',
  metafile: true,
  logLevel: 'warning',
});
const bytes = Object.values(result.metafile.outputs).reduce((n, o) => n + o.bytes, 0);
console.log(`dashboard-ui: dist/app.js ${(bytes / 1024).toFixed(0)} KiB`);
