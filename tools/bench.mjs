#!/usr/bin/env node
// `npm run bench`: runs every tools/bench-*.mjs in turn (after `bash tools/setup.sh`);
// each prints a Markdown table and writes it under bench-results/.
// `npm run bench -- NAME...` runs only tools/bench-NAME.mjs.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const wanted = process.argv.slice(2);
const scripts = readdirSync(here)
  .filter((f) => /^bench-.+\.mjs$/.test(f))
  .filter((f) => wanted.length === 0 || wanted.includes(f.slice('bench-'.length, -'.mjs'.length)))
  .sort();
let failed = 0;
for (const s of scripts) {
  console.log(`\n## ${s}\n`);
  const r = spawnSync(process.execPath, [join(here, s)], { stdio: 'inherit' });
  if (r.status !== 0) failed++;
}
process.exit(failed ? 1 : 0);
