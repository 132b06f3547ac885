#!/usr/bin/env node
// Type-checks every package and e2e with its tsconfig.json (sources and
// specs, against sibling sources via the @kiln/source condition), two at once.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const tsc = join(root, 'node_modules', '.bin', 'tsc');
const dirs = [...readdirSync(join(root, 'packages')).map((d) => join(root, 'packages', d)), join(root, 'e2e')].filter((d) => existsSync(join(d, 'tsconfig.json')));
let failed = 0;
async function check(dir) {
  await new Promise((resolve) => {
    const p = spawn(tsc, ['-p', join(dir, 'tsconfig.json')], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.on('close', (code) => {
      if (code !== 0) {
        failed++;
        console.error(`typecheck failed in ${dir.slice(root.length + 1)}:\n${out}`);
      }
      resolve();
    });
  });
}
const queue = [...dirs];
await Promise.all([0, 1].map(async () => {
  while (queue.length) await check(queue.shift());
}));
if (failed) process.exit(1);
console.log(`typecheck passed (${dirs.length} projects)`);
