#!/usr/bin/env node
// Builds the CLI's start-up snapshot, packages/cli/dist/kiln-cli.snapshot.blob
// (Node's userland snapshot: `node --build-snapshot`, see
// tools/cli-snapshot-entry.cjs), and its stamp kiln-cli.snapshot.node, a file
// whose modification time is copied from the node binary that built the blob.
// Run by tools/bundle-cli.mjs after the bundle.
//
// Why: a `kiln build` process spends ~45 ms of CPU compiling the bundle (from
// the code cache) and running its top level (protobuf registries, Connect,
// pino); a snapshot holds that heap ready-made.
//
// A blob runs only on the very node binary that made it (node exits 14 or
// crashes otherwise), so bin/kiln uses it only when the `node` it would start
// has the stamp's modification time, and NODE_OPTIONS is empty (V8 flags
// there change the blob's check too); else it runs bin/kiln.mjs as before.
// The stamp's text names that node (version, path, size, mtime): a copy that
// lost the mtime (an nx cache restore) is re-stamped by the first plain run
// on that very node (repairSnapshotStamp in bin/kiln-cli-loader.mjs).
// A failed build leaves no blob: a warning, and the CLI runs without one.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, realpathSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { nodeIdentity } from '../bin/kiln-cli-loader.mjs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(repo, 'packages', 'cli', 'dist');
export const SNAPSHOT_PATH = join(dist, 'kiln-cli.snapshot.blob');
export const STAMP_PATH = join(dist, 'kiln-cli.snapshot.node');
/** Built-ins whose native state a snapshot cannot hold: loaded on first use after start. */
const DEFERRED_BUILTINS = ['http', 'http2', 'https', 'tls'];

/** Builds the blob and its stamp; returns undefined, or why there is no blob. */
export function buildCliSnapshot() {
  const node = process.execPath;
  rmSync(STAMP_PATH, { force: true });
  rmSync(SNAPSHOT_PATH, { force: true });
  const require = createRequire(import.meta.url);
  const deferred = Object.fromEntries(DEFERRED_BUILTINS.map((name) => [name, Object.keys(require(`node:${name}`))]));
  const bundle = readFileSync(join(dist, 'kiln-cli.bundle.cjs'), 'utf8');
  // The bundle as a function that returns a way to set its paths at run time.
  const wrapped =
    '(function (exports, require, module, __filename, __dirname, __kilnBundleUrl) {' +
    bundle +
    '\n;return function relocate(f, d, u) { __filename = f; __dirname = d; __kilnBundleUrl = u; };\n})';
  const entry = readFileSync(join(repo, 'tools', 'cli-snapshot-entry.cjs'), 'utf8')
    .replace('/* KILN_DEFERRED_BUILTINS */ {}', () => JSON.stringify(deferred))
    .replace('/* KILN_CLI_BUNDLE */ undefined', () => wrapped);
  const work = mkdtempSync(join(tmpdir(), 'kiln-cli-snapshot-'));
  try {
    const entryPath = join(work, 'entry.cjs');
    const blob = join(work, 'kiln-cli.snapshot.blob');
    writeFileSync(entryPath, entry);
    const r = spawnSync(node, ['--snapshot-blob', blob, '--build-snapshot', entryPath], { cwd: work, encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } });
    if (r.status !== 0) {
      // Node's notes on built-ins it has not verified in snapshots are noise; the error is not.
      const why = (r.stderr || '').split('\n').filter((l) => l && !/not yet fully verified|It may still work|To request support|--trace-warnings/.test(l));
      return `node --build-snapshot exited ${r.status ?? r.signal}: ${why.slice(0, 8).join('\n')}`;
    }
    // Blob first, then the stamp: bin/kiln never sees a stamp without its whole blob.
    renameSync(blob, SNAPSHOT_PATH);
    writeFileSync(STAMP_PATH, JSON.stringify(nodeIdentity(node)) + '\n');
    const touch = spawnSync('touch', ['-r', realpathSync(node), STAMP_PATH]);
    if (touch.status !== 0) {
      rmSync(STAMP_PATH, { force: true });
      return `touch -r ${node} ${STAMP_PATH} failed`;
    }
    return undefined;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const failed = buildCliSnapshot();
  if (failed) console.warn(`cli-snapshot: no start-up snapshot (the CLI runs without one): ${failed}`);
}
