import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

/**
 * For specs that run a fixture (testing/fixtures/NAME.ts) in a child process:
 * bundles it into `work` and returns the bundle's path and the NODE_PATH
 * that lets its require('better-sqlite3') find the workspace's copy.
 */
export async function bundleFixture(name: string, work: string): Promise<{ bundle: string; nodePath: string }> {
  const bundle = join(work, `${name}.mjs`);
  await build({
    entryPoints: [fileURLToPath(new URL(`./fixtures/${name}.ts`, import.meta.url))],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    outfile: bundle,
    conditions: ['@kiln/source'],
    external: ['better-sqlite3'],
    logLevel: 'warning',
    // Bundled CommonJS dependencies call require().
    banner: { js: "import { createRequire as __kilnRequire } from 'node:module'; const require = __kilnRequire(import.meta.url);" },
  });
  const nodePath = dirname(dirname(createRequire(import.meta.url).resolve('better-sqlite3/package.json')));
  return { bundle, nodePath };
}
