#!/usr/bin/env node
// Copies what running Kiln needs, and nothing else, into one directory:
//   DEST/bin/{kiln,kiln.mjs,kiln-cli-loader.mjs,kilnd}
//   DEST/packages/<pkg>/{package.json,dist/**/*.js}   (no testkit, no e2e, no .d.ts/.map)
//   DEST/node_modules/<dep>                           (production deps from package-lock.json)
//   DEST/node_modules/@kiln/<pkg> -> ../../packages/<pkg>
//   DEST/deploy/nats/*                                (the NATS config the units and images start)
//   DEST/kiln-bundle.json                             (commit, node engine)
// Used by tools/install.sh (-> /opt/kiln) and tools/image.sh (the image's /opt/kiln).
// Needs a built tree (`npm run build`); the copy uses the host's compiled
// better-sqlite3, so the target runs Node 20 (ABI 115) on glibc >= the host's.
//
//   node tools/stage-kiln.mjs DEST
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dest = process.argv[2];
if (!dest || process.argv.length > 3) {
  console.error('usage: node tools/stage-kiln.mjs DEST');
  process.exit(2);
}
const out = resolve(dest);
if (out === repo || repo.startsWith(out + sep)) {
  console.error(`stage-kiln: DEST ${out} must not contain the repository`);
  process.exit(2);
}

/** Workspace packages that never run in a deployment. */
const SKIP_WORKSPACES = new Set(['packages/testkit', 'e2e']);
/** Per dependency, the only paths kept (native build leftovers are large). */
const KEEP_ONLY = {
  'node_modules/better-sqlite3': ['package.json', 'LICENSE', 'lib', 'build/Release/better_sqlite3.node'],
};

const lock = JSON.parse(readFileSync(join(repo, 'package-lock.json'), 'utf8'));
for (const needed of ['packages/kilnd/dist/index.js', 'packages/cli/dist/kiln-cli.bundle.cjs']) {
  if (!existsSync(join(repo, needed))) {
    console.error(`stage-kiln: ${needed} is missing: build first (npm run build)`);
    process.exit(1);
  }
}

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

for (const f of ['kiln', 'kiln.mjs', 'kiln-cli-loader.mjs', 'kilnd']) cpSync(join(repo, 'bin', f), join(out, 'bin', f));
cpSync(join(repo, 'deploy', 'nats'), join(out, 'deploy', 'nats'), { recursive: true });


const workspaces = [];
for (const [key, entry] of Object.entries(lock.packages)) {
  if (key === '' || !entry.link) continue;
  // node_modules/@kiln/api -> packages/api
  if (SKIP_WORKSPACES.has(entry.resolved)) continue;
  workspaces.push({ link: key, dir: entry.resolved });
}
for (const { link, dir } of workspaces) {
  const pkgDir = join(repo, dir);
  cpSync(join(pkgDir, 'package.json'), join(out, dir, 'package.json'));
  cpSync(join(pkgDir, 'dist'), join(out, dir, 'dist'), {
    recursive: true,
    // Keeps the CLI snapshot's stamp (its node binary's mtime, see tools/cli-snapshot.mjs) valid in the copy.
    preserveTimestamps: true,
    filter: (src) => !/\.(d\.ts|map|tsbuildinfo)$/.test(src),
  });
  mkdirSync(dirname(join(out, link)), { recursive: true });
  symlinkSync(relative(dirname(join(out, link)), join(out, dir)), join(out, link));
}

let deps = 0;
for (const [key, entry] of Object.entries(lock.packages)) {
  if (!key.startsWith('node_modules/') && !key.includes('/node_modules/')) continue;
  if (entry.link || entry.dev || entry.devOptional) continue;
  const src = join(repo, key);
  if (!existsSync(src)) {
    if (entry.optional) continue; // another platform's optional binary
    console.error(`stage-kiln: ${key} is in package-lock.json but not installed: run npm install`);
    process.exit(1);
  }
  const keep = KEEP_ONLY[key];
  if (keep) {
    for (const p of keep) cpSync(join(src, p), join(out, key, p), { recursive: true });
  } else {
    // Nested node_modules are their own lockfile entries (copied when they are production deps).
    cpSync(src, join(out, key), { recursive: true, filter: (s) => !relative(src, s).split(sep).includes('node_modules') });
  }
  deps++;
}

let commit = 'unknown';
try {
  commit = execFileSync('git', ['-C', repo, 'rev-parse', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
} catch {
  // not a git checkout
}
const rootPkg = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8'));
writeFileSync(join(out, 'package.json'), JSON.stringify({ name: 'kiln-bundle', private: true, type: 'module', engines: rootPkg.engines }, null, 2) + '\n');
writeFileSync(join(out, 'kiln-bundle.json'), JSON.stringify({ commit, node: rootPkg.engines?.node ?? '' }, null, 2) + '\n');
console.log(`stage-kiln: ${out}: ${workspaces.length} packages, ${deps} dependencies, ${countFiles(out)} files`);

function countFiles(dir) {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) n += e.isDirectory() ? countFiles(join(dir, e.name)) : 1;
  return n;
}
