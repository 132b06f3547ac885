// Loads the bundled CLI (packages/cli/dist/kiln-cli.bundle.cjs, made by tools/bundle-cli.mjs)
// with V8's code cache (kiln-cli.bundle.cache beside it). Why: compiling the
// 1 MB bundle is the largest single cost of a `kiln` process (~30% of a
// cached build's CLI CPU), and Node 20 has no compile cache of its own for
// user code (module.enableCompileCache came in Node 22). A vm.Script takes
// V8's cached data; an ES module cannot, so the bundle is CommonJS.
//
// The cache file is `kiln-cli-build <id>\n` + V8's data. The id is written
// into the bundle's first line by each bundling, so a cache from another
// build is never used (V8 itself checks only the source's length, its own
// version and flags). No cache, another build's, or one V8 rejects: the
// bundle is compiled as usual.
import { spawnSync } from 'node:child_process';
import { readFileSync, realpathSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import vm from 'node:vm';

const dist = join(dirname(fileURLToPath(import.meta.url)), '..', 'packages', 'cli', 'dist');
export const BUNDLE_PATH = join(dist, 'kiln-cli.bundle.cjs');
export const CACHE_PATH = join(dist, 'kiln-cli.bundle.cache');
export const SNAPSHOT_STAMP_PATH = join(dist, 'kiln-cli.snapshot.node');
const ID_LINE = /^\/\* kiln-cli-build ([0-9a-f-]+) \*\//;

/** The bundle's build id (its first line), or undefined. */
export function bundleBuildId(source) {
  return ID_LINE.exec(source)?.[1];
}

/**
 * Compiles and runs the bundle; returns its exports, whether V8 took the
 * cache (cacheUsed), and the vm.Script
 * (whose createCachedData() the cache tool writes). `useCache: false`
 * compiles without the cache. The paths are for tests.
 */
export function loadCliBundle({ useCache = true, bundlePath = BUNDLE_PATH, cachePath = CACHE_PATH } = {}) {
  const source = readFileSync(bundlePath, 'utf8');
  const cachedData = useCache ? readCache(cachePath, bundleBuildId(source)) : undefined;
  const script = new vm.Script(`(function (exports, require, module, __filename, __dirname, __kilnBundleUrl) {${source}\n})`, {
    filename: bundlePath,
    cachedData,
  });
  const module = { exports: {} };
  script.runInThisContext()(module.exports, createRequire(bundlePath), module, bundlePath, dirname(bundlePath), pathToFileURL(bundlePath).href);
  return { exports: module.exports, script, cacheUsed: cachedData !== undefined && script.cachedDataRejected !== true };
}

function readCache(cachePath, id) {
  if (id === undefined) return undefined;
  let data;
  try {
    data = readFileSync(cachePath);
  } catch {
    return undefined;
  }
  const header = `kiln-cli-build ${id}\n`;
  if (data.length <= header.length || data.toString('latin1', 0, header.length) !== header) return undefined;
  return data.subarray(header.length);
}

/** What the start-up snapshot's stamp records of the node binary that built the blob (tools/cli-snapshot.mjs). */
export function nodeIdentity(node = process.execPath) {
  const st = statSync(node, { bigint: true });
  return { version: process.version, arch: process.arch, path: realpathSync(node), size: String(st.size), mtimeNs: String(st.mtimeNs) };
}

/**
 * bin/kiln uses the snapshot when the node binary's mtime is the stamp's; a
 * copy of the tree that did not keep mtimes (an nx cache restore) loses that.
 * Run by the plain path: when the stamp's text names this very node but its
 * mtime differs, copies the node's mtime onto it (`touch -r`, nanoseconds) so
 * the next run uses the snapshot again. Returns whether it did.
 */
export function repairSnapshotStamp({ stampPath = SNAPSHOT_STAMP_PATH, node = process.execPath } = {}) {
  try {
    const stampNs = statSync(stampPath, { bigint: true }).mtimeNs;
    const here = nodeIdentity(node);
    if (String(stampNs) === here.mtimeNs) return false;
    const recorded = JSON.parse(readFileSync(stampPath, 'utf8'));
    if (Object.entries(here).some(([k, v]) => recorded[k] !== v)) return false;
    return spawnSync('touch', ['-r', here.path, stampPath], { stdio: 'ignore' }).status === 0;
  } catch {
    return false; // no stamp, or one this user may not write: run as is
  }
}
