import { readdirSync } from 'node:fs';
import { defaultServerConditions } from 'vite';
import { defineConfig } from 'vitest/config';

// One vitest project per package (named like the package folder) plus e2e.
// Specs import sibling packages through the "@kiln/source" export condition,
// so unit tests run against TypeScript sources without a build.
const packages = readdirSync(new URL('./packages', import.meta.url));

export default defineConfig({
  ssr: { resolve: { conditions: ['@kiln/source', ...defaultServerConditions] } },
  test: {
    globals: true,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    projects: [
      ...packages.map((name) => ({
        extends: true as const,
        test: { name, root: `packages/${name}`, include: ['src/**/*.spec.ts'] },
      })),
      { extends: true as const, test: { name: 'e2e', root: 'e2e', include: ['src/**/*.spec.ts'], fileParallelism: false } },
      { extends: true as const, test: { name: 'tools', root: 'tools', include: ['**/*.spec.ts'] } },
    ],
  },
});
