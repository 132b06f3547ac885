#!/usr/bin/env node
// Benchmarks of the walking skeleton (run after `bash tools/setup.sh`):
// wall time of `kiln build` on the all-in-one daemon for a few contexts, and
// the bytes the session moved. Prints a Markdown table and writes it to
// bench-results/skeleton.md. Each scenario runs RUNS times; the median counts.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const kiln = join(repo, 'bin', 'kiln');
const RUNS = Number(process.env.BENCH_RUNS ?? 5);

function context(name, files) {
  const dir = mkdtempSync(join(tmpdir(), `kiln-bench-${name}-`));
  for (const [path, data] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), data);
  }
  return dir;
}

const many = {};
for (let i = 0; i < 2000; i++) many[`src/d${i % 40}/f${i}.txt`] = `file ${i}\n`.repeat(20);

const scenarios = [
  { name: 'hello (examples/hello)', dir: join(repo, 'examples', 'hello') },
  { name: '2000 small files (COPY src /src)', dir: context('many', { ...many, Dockerfile: 'FROM scratch\nCOPY src /src\n' }) },
  {
    name: '64 MiB file, COPY of a 1 kB sibling only',
    dir: context('big', { 'big.bin': Buffer.alloc(64 * 1024 * 1024, 1), 'small.txt': 'x'.repeat(1000), Dockerfile: 'FROM scratch\nCOPY small.txt /\n' }),
  },
  { name: '64 MiB file copied', dir: context('bigcopy', { 'big.bin': Buffer.alloc(64 * 1024 * 1024, 2), Dockerfile: 'FROM scratch\nCOPY big.bin /\n' }) },
];

function run(args, env) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const p = spawn(kiln, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => (err += d));
    p.on('close', (code) => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (code !== 0) reject(new Error(`kiln ${args.join(' ')} exited ${code}:\n${err}`));
      else resolve({ ms, stderr: err });
    });
  });
}

function baseline(dir, work) {
  mkdirSync(work, { recursive: true });
  const t0 = process.hrtime.bigint();
  const sh = (cmd) => execFileSync('sh', ['-c', cmd], { stdio: 'ignore' });
  sh(`tar -C '${dir}' -cf - . | tar -C '${work}' -xf - && mkdir '${work}.copy' && cp -a '${work}/.' '${work}.copy/' && mkdir '${work}.out' && tar -C '${work}.copy' -cf - . | tar -C '${work}.out' -xf -`);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  rmSync(work, { recursive: true, force: true });
  rmSync(`${work}.copy`, { recursive: true, force: true });
  rmSync(`${work}.out`, { recursive: true, force: true });
  return ms;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const root = mkdtempSync(join(tmpdir(), 'kiln-bench-root-'));
const env = { KILN_ROOT: root, KILN_ADDR: '', KILN_LOG_LEVEL: 'warn' };
const rows = [];
try {
  // First call starts the daemon; measured separately.
  const warm = await run(['build', '--progress=plain', '-o', `type=local,dest=${join(root, 'o0')}`, join(repo, 'examples', 'hello')], env);
  rows.push({ name: 'first build incl. daemon start (hello)', ms: warm.ms, sent: '' });
  for (const s of scenarios) {
    const times = [];
    let sent = '';
    for (let i = 0; i < RUNS; i++) {
      const out = join(root, `out-${i}`);
      const r = await run(['build', '--progress=plain', '-o', `type=local,dest=${out}`, s.dir], env);
      times.push(r.ms);
      sent = [...r.stderr.matchAll(/transferring context: ([\d.]+[kMG]?B)/g)].pop()?.[1] ?? '';
      rmSync(out, { recursive: true, force: true });
    }
    // Baseline on the same disk: what the build's file work costs with GNU
    // tar and cp (pack+unpack the context, copy it, pack+unpack the result).
    const base = [];
    for (let i = 0; i < RUNS; i++) base.push(baseline(s.dir, join(root, `base-${i}`)));
    rows.push({ name: s.name, ms: median(times), sent, baseMs: median(base) });
  }
} finally {
  if (existsSync(join(root, 'kilnd.pid'))) {
    try {
      process.kill(Number(execFileSync('cat', [join(root, 'kilnd.pid')], { encoding: 'utf8' })), 'SIGTERM');
    } catch {
      // already gone
    }
  }
  for (const s of scenarios) if (s.dir.startsWith(tmpdir())) rmSync(s.dir, { recursive: true, force: true });
  setTimeout(() => rmSync(root, { recursive: true, force: true }), 1000);
}

const table = [
  `Kiln walking skeleton, all-in-one daemon, ${RUNS} runs (median), ${new Date().toISOString()}`,
  '',
  'Baseline: the same file work with GNU tar and cp on the same disk (tar the whole context dir through a pipe, cp -a it, tar the copy through a pipe); it sends every file, Kiln only the ones the build reads.',
  '',
  '| scenario | kiln build wall time | context sent | tar+cp baseline | kiln / baseline |',
  '| --- | ---: | ---: | ---: | ---: |',
  ...rows.map((r) => `| ${r.name} | ${(r.ms / 1000).toFixed(3)} s | ${r.sent} | ${r.baseMs ? `${(r.baseMs / 1000).toFixed(3)} s` : ''} | ${r.baseMs ? (r.ms / r.baseMs).toFixed(2) : ''} |`),
].join('\n');
console.log(table);
mkdirSync(join(repo, 'bench-results'), { recursive: true });
writeFileSync(join(repo, 'bench-results', 'skeleton.md'), table + '\n');
