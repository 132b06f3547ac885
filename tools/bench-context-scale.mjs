#!/usr/bin/env node
// `npm run bench -- context-scale`: context transfer at scale (issue 17):
// `kiln build` of a context of N empty files (1,000 per directory) with
// `FROM scratch` + `COPY . /x`, on its own all-in-one daemon, so the time is
// the CLI walk, the session relay, the worker's receive + manifest + content
// digest, the copy and the result's commit. Each size gets a fresh marker
// file, so neither the context nor the COPY is cached. The time should grow
// linearly with N: the table shows µs per file and each size's time over
// the smallest size's, scaled by N (1.00 = linear). Target: 100k files < 10 s.
// Sizes: BENCH_CONTEXT_FILES (default 100000,200000,400000; each size needs
// about 3 N new files on the disk: the context, its received copy, the COPY).
// Writes bench-results/context-scale.md.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const kiln = process.env.KILN_BIN || join(repo, 'bin', 'kiln');
const sizes = (process.env.BENCH_CONTEXT_FILES ?? '100000,200000,400000').split(',').map(Number);

function makeContext(dir, n) {
  mkdirSync(join(dir, 'ctx'), { recursive: true });
  for (let i = 0; i < n; i++) {
    const sub = join(dir, 'ctx', `d${String(Math.floor(i / 1000)).padStart(4, '0')}`);
    if (i % 1000 === 0) mkdirSync(sub);
    writeFileSync(join(sub, `f${i}`), '');
  }
  writeFileSync(join(dir, 'ctx', 'marker'), `${process.pid}-${Date.now()}-${n}\n`);
  writeFileSync(join(dir, 'Dockerfile'), 'FROM scratch\nCOPY . /x\n');
}

/** CPU seconds (user + system) the daemon has used so far: a measure the other load on the machine does not inflate much. */
function daemonCpuSeconds(root) {
  try {
    const pid = readFileSync(join(root, 'kilnd.pid'), 'utf8').trim();
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
  } catch {
    return NaN;
  }
}

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

/** Seconds of the step whose plain-progress name matches `name` (as the printer reports its DONE). */
function stepSeconds(stderr, name) {
  const id = new RegExp(`#(\\d+) ${name}`).exec(stderr)?.[1];
  const done = id && new RegExp(`#${id} DONE ([\\d.]+)s`).exec(stderr);
  return done ? Number(done[1]) : NaN;
}

const root = mkdtempSync(join(tmpdir(), 'kiln-bench-ctx-root-'));
const work = mkdtempSync(join(tmpdir(), 'kiln-bench-ctx-'));
const env = { KILN_ROOT: root, KILN_ADDR: '', KILN_LOG_LEVEL: 'warn' };
const rows = [];
try {
  await run(['workers'], env); // starts the daemon
  for (const n of sizes) {
    const dir = join(work, String(n));
    makeContext(dir, n);
    const cpu0 = daemonCpuSeconds(root);
    const r = await run(['build', '--progress=plain', '-f', join(dir, 'Dockerfile'), join(dir, 'ctx')], env);
    const cpu = daemonCpuSeconds(root) - cpu0;
    const t = stepSeconds(r.stderr, '\\[internal\\] load build context');
    const copy = stepSeconds(r.stderr, '\\[[^\\]]*\\] COPY');
    rows.push({ n, ms: r.ms, transfer: t, copy, cpu });
    console.log(`${n} files: build ${(r.ms / 1000).toFixed(2)} s, transfer ${t.toFixed(2)} s, COPY ${copy.toFixed(2)} s, daemon CPU ${cpu.toFixed(2)} s`);
    rmSync(dir, { recursive: true, force: true });
  }
} finally {
  const pidFile = join(root, 'kilnd.pid');
  if (existsSync(pidFile)) {
    process.kill(Number(readFileSync(pidFile, 'utf8').trim()), 'SIGTERM');
    for (let i = 0; i < 100 && existsSync(pidFile); i++) await new Promise((r) => setTimeout(r, 100));
  }
  rmSync(root, { recursive: true, force: true });
  rmSync(work, { recursive: true, force: true });
}

const first = rows[0];
/** This row's time per file over the first row's (1.00: linear in N). */
const linearity = (r, key) => (first ? ((r[key] / r.n) / (first[key] / first.n)).toFixed(2) : '');
const table = [
  `## Context transfer at scale (context-scale)`,
  '',
  `\`kiln build\` of N empty files (1,000 per directory) + \`COPY . /x\`, nothing cached (a fresh marker file per size), one run each, all-in-one daemon, ${new Date().toISOString().slice(0, 16)}Z. Build = wall time of the CLI; transfer = the "load build context" step; daemon CPU = user + system seconds of the daemon during the build (less sensitive to other load on the machine than wall time). Load average ${loadavg()[0].toFixed(1)} at the end.`,
  '',
  'Target: 100,000 files in < 10 s. Per-file ratio = (this size\'s time / N) over (the smallest size\'s / N): 1.00 is linear.',
  '',
  '| files | build (s) | transfer (s) | COPY (s) | daemon CPU (s) | build µs/file | daemon CPU µs/file | build per-file ratio | CPU per-file ratio |',
  '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ...rows.map(
    (r) =>
      `| ${r.n} | ${(r.ms / 1000).toFixed(2)} | ${r.transfer.toFixed(2)} | ${r.copy.toFixed(2)} | ${r.cpu.toFixed(2)} | ${((r.ms * 1000) / r.n).toFixed(0)} | ${((r.cpu * 1e6) / r.n).toFixed(0)} | ${linearity(r, 'ms')} | ${linearity(r, 'cpu')} |`,
  ),
  '',
];
mkdirSync(join(repo, 'bench-results'), { recursive: true });
writeFileSync(join(repo, 'bench-results', 'context-scale.md'), table.join('\n'));
console.log(table.join('\n'));
