#!/usr/bin/env node
// Start-up and fixed per-build cost of the CLI (issue 17's targets): wall
// time of `kiln --version`, `kiln --help` and of a fully cached `kiln build
// -t` (a new `kiln` process each time, as a user runs it, against the
// all-in-one daemon the first call starts), next to `node -e 0` on the same
// machine. Prints a Markdown table and writes bench-results/startup.md.
// RUNS (default 20) runs each; median and min count. Also checks that the
// cached builds all gave the same image digest (no new config or manifest).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const kiln = join(repo, 'bin', 'kiln');
const RUNS = Number(process.env.BENCH_RUNS ?? 20);

const root = mkdtempSync(join(tmpdir(), 'kiln-bench-startup-'));
const ctx = join(root, 'ctx');
mkdirSync(join(ctx, 'files'), { recursive: true });
for (let i = 0; i < 100; i++) writeFileSync(join(ctx, 'files', `f${i}.txt`), `file ${i}\n`.repeat(200));
writeFileSync(join(root, 'Dockerfile'), 'FROM scratch\nCOPY files/ /app/files/\nENV STEP=2\nCOPY files/f1.txt /app/one.txt\nCMD ["/app"]\n');
const env = { ...process.env, KILN_ROOT: join(root, 'daemon'), KILN_ADDR: '', KILN_LOG_LEVEL: 'warn' };

function time(cmd, args) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}:\n${r.stderr}`);
  return ms;
}
const stats = (xs) => ({ median: [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)], min: Math.min(...xs) });
const build = (meta) => ['build', '--progress=plain', '-f', join(root, 'Dockerfile'), '-t', 'bench-startup:latest', '--metadata-file', meta, ctx];

const rows = [];
const digests = new Set();
try {
  time(kiln, build(join(root, 'meta-warm.json'))); // starts the daemon, fills the cache
  const series = { node: [], version: [], help: [], cached: [] };
  for (let i = 0; i < RUNS; i++) {
    // Alternated, so a burst of load on the shared machine hits every row alike.
    series.node.push(time(process.execPath, ['-e', '0']));
    series.version.push(time(kiln, ['--version']));
    series.help.push(time(kiln, ['--help']));
    const meta = join(root, `meta-${i}.json`);
    series.cached.push(time(kiln, build(meta)));
    digests.add(JSON.parse(readFileSync(meta, 'utf8'))['containerimage.digest']);
  }
  rows.push({ name: '`node -e 0` (reference)', ...stats(series.node), target: '' });
  rows.push({ name: '`kiln --version`', ...stats(series.version), target: '< 80 ms' });
  rows.push({ name: '`kiln --help`', ...stats(series.help), target: '< 80 ms' });
  rows.push({ name: 'fully cached `kiln build -t` (100 files, 4 steps)', ...stats(series.cached), target: '< 150 ms' });
} finally {
  const pid = join(root, 'daemon', 'kilnd.pid');
  if (existsSync(pid)) {
    try {
      process.kill(Number(readFileSync(pid, 'utf8')), 'SIGTERM');
    } catch {
      // already gone
    }
  }
  setTimeout(() => rmSync(root, { recursive: true, force: true }), 2000);
}

const commit = (() => {
  try {
    return execFileSync('git', ['-C', repo, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
})();
const table = [
  `# CLI start-up and cached build latency`,
  '',
  `Kiln ${commit}, ${RUNS} runs each (alternated), wall time of a new process; load average ${loadavg()[0].toFixed(1)} at the end (targets are for a quiet machine). ${new Date().toISOString()}`,
  '',
  '| what | median | min | target |',
  '| --- | ---: | ---: | ---: |',
  ...rows.map((r) => `| ${r.name} | ${r.median.toFixed(0)} ms | ${r.min.toFixed(0)} ms | ${r.target} |`),
  '',
  `Cached builds gave ${digests.size === 1 ? 'one image digest (no new config or manifest)' : `${digests.size} different image digests`}.`,
].join('\n');
console.log(table);
mkdirSync(join(repo, 'bench-results'), { recursive: true });
writeFileSync(join(repo, 'bench-results', 'startup.md'), table + '\n');
