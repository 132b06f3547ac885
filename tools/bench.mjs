#!/usr/bin/env node
// `npm run bench`: runs every tools/bench-*.mjs in turn (after `bash tools/setup.sh`);
// each prints a Markdown table and writes it under bench-results/; then every table there
// (this run's and earlier ones') is gathered into bench/results/latest.md, which is committed.
// `npm run bench -- NAME...` runs only tools/bench-NAME.mjs.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
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
gatherResults(join(here, '..'));
process.exit(failed ? 1 : 0);

function gatherResults(repo) {
  const from = join(repo, 'bench-results');
  if (!existsSync(from)) return;
  const tables = readdirSync(from)
    .filter((f) => f.endsWith('.md'))
    .sort()
    .map((f) => ({ f, text: readFileSync(join(from, f), 'utf8').trim(), at: statSync(join(from, f)).mtime.toISOString().slice(0, 16).replace('T', ' ') }));
  const head = [
    '# Kiln benchmarks: latest results',
    '',
    `Gathered by \`npm run bench\` on ${new Date().toISOString().slice(0, 10)}: ${cpus().length} cores, Node.js ${process.version}, load average ${loadavg()[0].toFixed(1)} at the end. Each section says when it ran (UTC).`,
    '',
  ];
  const body = tables.flatMap(({ f, text, at }) => [`<!-- ${f}, run ${at} -->`, text.replace(/^# /, '## '), '']);
  mkdirSync(join(repo, 'bench', 'results'), { recursive: true });
  writeFileSync(join(repo, 'bench', 'results', 'latest.md'), [...head, ...body].join('\n'));
}
