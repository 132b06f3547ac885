// One-off: creates the package skeletons (kept for reference when adding a tier).
import { mkdirSync, writeFileSync, existsSync } from 'node:fs';
const pkgs = {
  common: ['lib', { pino: '^9.7.0' }, []],
  llb: ['lib', { '@bufbuild/protobuf': '2.13.0' }, ['api', 'common']],
  dockerfile: ['lib', {}, ['api', 'common', 'llb']],
  bus: ['lib', { nats: '^2.29.3', '@bufbuild/protobuf': '2.13.0' }, ['api', 'common']],
  registry: ['lib', {}, ['common']],
  snapshotter: ['lib', {}, ['common']],
  worker: ['lib', { '@connectrpc/connect': '2.1.1', '@bufbuild/protobuf': '2.13.0' }, ['api', 'common', 'llb', 'bus', 'snapshotter']],
  'frontend-gateway': ['tier', { '@connectrpc/connect': '2.1.1', '@bufbuild/protobuf': '2.13.0' }, ['api', 'common', 'llb', 'dockerfile']],
  solver: ['tier', { '@connectrpc/connect': '2.1.1', '@bufbuild/protobuf': '2.13.0', 'better-sqlite3': '^12.4.1' }, ['api', 'common', 'llb', 'bus']],
  'content-store': ['tier', { '@connectrpc/connect': '2.1.1', '@bufbuild/protobuf': '2.13.0', 'better-sqlite3': '^12.4.1' }, ['api', 'common', 'bus']],
  'worker-oci': ['tier', {}, ['api', 'common', 'worker', 'snapshotter', 'bus']],
  'worker-containerd': ['tier', {}, ['api', 'common', 'worker', 'snapshotter', 'bus']],
  exporters: ['tier', { '@connectrpc/connect': '2.1.1', '@bufbuild/protobuf': '2.13.0' }, ['api', 'common', 'registry']],
  kilnd: ['app', { '@connectrpc/connect': '2.1.1', '@connectrpc/connect-node': '2.1.1', '@bufbuild/protobuf': '2.13.0', 'smol-toml': '^1.4.1', yaml: '^2.8.0', pino: '^9.7.0' }, ['api', 'common', 'bus', 'solver', 'frontend-gateway', 'content-store', 'worker-oci', 'worker-containerd', 'exporters', 'worker']],
  cli: ['app', { '@connectrpc/connect': '2.1.1', '@connectrpc/connect-node': '2.1.1', '@bufbuild/protobuf': '2.13.0', pino: '^9.7.0' }, ['api', 'common', 'dockerfile']],
  testkit: ['testkit', {}, ['common']],
};
for (const [name, [kind, deps, internal]] of Object.entries(pkgs)) {
  const dir = `packages/${name}`;
  mkdirSync(`${dir}/src`, { recursive: true });
  const dependencies = { ...Object.fromEntries(internal.map((d) => [`@kiln/${d}`, '0.1.0'])), ...deps };
  const pj = {
    name: `@kiln/${name}`, version: '0.1.0', private: true, type: 'module',
    exports: { '.': { '@kiln/source': './src/index.ts', types: './dist/index.d.ts', default: './dist/index.js' } },
    scripts: { build: 'tsc -b tsconfig.lib.json', test: `vitest run --root ../.. --project ${name}` },
    dependencies,
    nx: { tags: [`type:${kind}`] },
  };
  if (!existsSync(`${dir}/package.json`)) writeFileSync(`${dir}/package.json`, JSON.stringify(pj, null, 2) + '\n');
  const refs = internal.map((d) => ({ path: `../${d}/tsconfig.lib.json` }));
  writeFileSync(`${dir}/tsconfig.json`, JSON.stringify({ extends: '../../tsconfig.base.json', compilerOptions: { noEmit: true, customConditions: ['@kiln/source'], types: ['node', 'vitest/globals'] }, include: ['src'] }, null, 2) + '\n');
  writeFileSync(`${dir}/tsconfig.lib.json`, JSON.stringify({ extends: '../../tsconfig.base.json', compilerOptions: { outDir: 'dist', rootDir: 'src', composite: true }, include: ['src'], exclude: ['src/**/*.spec.ts', 'src/**/*.int.spec.ts', 'src/testing/fixtures/**'], references: refs }, null, 2) + '\n');
  if (!existsSync(`${dir}/src/index.ts`)) writeFileSync(`${dir}/src/index.ts`, `export {};\n`);
}
