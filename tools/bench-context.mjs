#!/usr/bin/env node
// Context transfer at scale: `kiln build` of a context of N empty files
// (1,000 per directory) with `FROM scratch` + `COPY . /`, on its own
// all-in-one daemon, so the time is the CLI walk, the session relay, the
// worker's receive + manifest + content digest and the copy. Each size gets
// a fresh marker file, so neither the context nor the COPY is cached. The
// time should grow linearly with N: the table shows µs per file.
// Sizes: BENCH_CONTEXT_FILES (default 10000,20000,40000,100000,200000).
// Writes bench-results/context.md.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const kiln = process.env.KILN_BIN || join(repo, 'bin', 'kiln');
const sizes = (process.env.BENCH_CONTEXT_FILES ?? '10000,20000,40000,100000,200000').split(',').map(Number);

function makeContext(dir, n) {
  mkdirSync(join(dir, 'ctx'), { recursive: true });
  for (let i = 0; i < n; i++) {
    const sub = join(dir, 'ctx', `d${String(Math.floor(i / 1000)).padStart(4, '0')}`);
    if (i % 1000 === 0) mkdirSync(sub);
    writeFileSync(join(sub, `f${i}`), '');
  }
  writeFileSync(join(dir, 'ctx', 'marker'), `${process.pid}-${Date.now()}-${n}\n`);
  writeFileSync(join(dir, 'Dockerfile'), 'FROM scratch\nCOPY . /\n');
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

/** Seconds of the "[internal] load build context" step (as the plain printer reports its DONE). */
function transferSeconds(stderr) {
  const id = /#(\d+) \[internal\] load build context/.exec(stderr)?.[1];
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
    const t = transferSeconds(r.stderr);
    rows.push({ n, ms: r.ms, transfer: t, cpu });
    console.log(`${n} files: build ${(r.ms / 1000).toFixed(2)} s, transfer ${t.toFixed(2)} s, daemon CPU ${cpu.toFixed(2)} s`);
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

const table = [
  `## Context transfer at scale`,
  '',
  `\`kiln build\` of N empty files (1,000 per directory) + \`COPY . /\`, nothing cached (a fresh marker file per size), one run each, all-in-one daemon, ${new Date().toISOString().slice(0, 16)}Z. Build = wall time of the CLI; transfer = the "load build context" step; daemon CPU = user + system seconds of the daemon during the build (less sensitive to other load on the machine than wall time). Load average ${loadavg()[0].toFixed(1)} at the end.`,
  '',
  '| files | build (s) | transfer (s) | daemon CPU (s) | build µs/file | daemon CPU µs/file |',
  '| ---: | ---: | ---: | ---: | ---: | ---: |',
  ...rows.map((r) => `| ${r.n} | ${(r.ms / 1000).toFixed(2)} | ${r.transfer.toFixed(2)} | ${r.cpu.toFixed(2)} | ${((r.ms * 1000) / r.n).toFixed(0)} | ${((r.cpu * 1e6) / r.n).toFixed(0)} |`),
  '',
];
mkdirSync(join(repo, 'bench-results'), { recursive: true });
writeFileSync(join(repo, 'bench-results', 'context.md'), table.join('\n'));
console.log(table.join('\n'));
