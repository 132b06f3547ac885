import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

// bin/kiln-cli-loader.mjs over the built bundle (npm run build made it and its code cache).
const repo = join(import.meta.dirname, '..', '..', '..');
const loader = join(repo, 'bin', 'kiln-cli-loader.mjs');
const dist = join(repo, 'packages', 'cli', 'dist');
const work = mkdtempSync(join(tmpdir(), 'kiln-bundle-loader-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const node = (script: string): unknown =>
  JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' }));

/** Loads a bundle in a plain `node` (V8 rejects a cache made under other flags, as vitest's workers may have). */
function load(bundlePath: string, cachePath: string): { cacheUsed: boolean; main: string; v8Accepts: boolean } {
  const loaded = node(`
    const { loadCliBundle } = await import(${JSON.stringify(loader)});
    const r = loadCliBundle({ bundlePath: ${JSON.stringify(bundlePath)}, cachePath: ${JSON.stringify(cachePath)} });
    console.log(JSON.stringify({ cacheUsed: r.cacheUsed, main: typeof r.exports.main }));`) as { cacheUsed: boolean; main: string };
  // What V8 alone says of the cache's bytes for this source (it checks the length, not the text); a
  // process of its own, since V8 answers a second compile of a source from memory.
  const v8Accepts = node(`
    import vm from 'node:vm';
    import { readFileSync } from 'node:fs';
    const src = readFileSync(${JSON.stringify(bundlePath)}, 'utf8');
    const data = readFileSync(${JSON.stringify(cachePath)});
    const s = new vm.Script('(function (exports, require, module, __filename, __dirname, __kilnBundleUrl) {' + src + '\\n})', { filename: ${JSON.stringify(bundlePath)}, cachedData: data.subarray(data.indexOf(10) + 1) });
    console.log(JSON.stringify(s.cachedDataRejected === false));`) as boolean;
  return { ...loaded, v8Accepts };
}

describe('CLI bundle loader', () => {
  const bundle = join(dist, 'kiln-cli.bundle.cjs');
  const cache = join(dist, 'kiln-cli.bundle.cache');

  it('compiles the built bundle from its code cache', () => {
    expect(load(bundle, cache)).toEqual({ cacheUsed: true, main: 'function', v8Accepts: true });
  });

  it('does not use the cache of another build of the bundle, even one V8 would take', () => {
    // Another build: the same length (V8 takes the cache), another build id and text.
    const other = join(work, 'other.cjs');
    const source = readFileSync(bundle, 'utf8');
    const id = /^\/\* kiln-cli-build ([0-9a-f-]+) \*\//.exec(source)![1]!;
    writeFileSync(other, source.replace(id, id.replace(/[0-9a-f]/g, (c) => (c === '0' ? '1' : '0'))));
    const r = load(other, cache);
    expect(r.v8Accepts).toBe(true);
    expect(r).toMatchObject({ cacheUsed: false, main: 'function' });
  });

  it('compiles without a cache V8 rejects', () => {
    const copy = join(work, 'copy.cjs');
    copyFileSync(bundle, copy);
    const bad = join(work, 'bad.cache');
    const header = readFileSync(cache).subarray(0, readFileSync(cache).indexOf(10) + 1);
    writeFileSync(bad, Buffer.concat([header, Buffer.alloc(4096, 7)]));
    expect(load(copy, bad)).toEqual({ cacheUsed: false, main: 'function', v8Accepts: false });
  });
});
