#!/usr/bin/env node
// Cache-aware placement: a split cluster with two OCI workers builds 3
// projects, alternating, two builds at a time (so load alone spreads them
// over both workers), once with the solver's `--placement cache` (the
// default: a build goes where its cached steps are, traded against load)
// and once with `--placement load` (least busy worker, ties to the lowest
// id). Each project is FROM a pushed busybox + 4 RUNs (the first sleeps 1 s,
// standing in for an install) + an edited COPY + a RUN reading it: the edit
// makes the last two steps run every time; the 4 RUNs are cached only on
// the worker that ran them. Counts the RUN steps reported CACHED and the
// wall time of the whole sequence. Fresh cluster per mode.
// Builds: BENCH_PLACEMENT_BUILDS (default 12). Writes bench-results/placement.md.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const kiln = process.env.KILN_BIN || join(repo, 'bin', 'kiln');
const testkitPath = join(repo, 'packages', 'testkit', 'dist', 'index.js');
if (!existsSync(testkitPath)) {
  console.error(`${testkitPath} is missing: run \`npm run build\` first`);
  process.exit(1);
}
const { startKilnCluster, startKilnNats, startRegistry, pushBusyboxImage } = await import(pathToFileURL(testkitPath).href);
const builds = Number(process.env.BENCH_PLACEMENT_BUILDS ?? 12);
const PROJECTS = ['alpha', 'beta', 'gamma'];

function run(args, env) {
  return new Promise((resolve, reject) => {
    const p = spawn(kiln, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => (err += d));
    p.on('close', (code) => (code === 0 ? resolve(err) : reject(new Error(`kiln ${args.join(' ')} exited ${code}:\n${err}`))));
  });
}

/** RUN steps in plain progress and how many of them were CACHED. */
function runSteps(stderr) {
  const lines = stderr.split('\n');
  const ids = lines.map((l) => /^#(\d+) \[.*\] RUN /.exec(l)?.[1]).filter(Boolean);
  const unique = [...new Set(ids)];
  const cached = unique.filter((id) => lines.some((l) => l === `#${id} CACHED`)).length;
  return { total: unique.length, cached };
}

function makeProject(work, name, base) {
  const dir = join(work, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, 'Dockerfile'),
    [
      `FROM ${base}`,
      `RUN sleep 1 && echo ${name} install > /1`,
      `RUN echo ${name} two > /2`,
      `RUN echo ${name} three > /3`,
      `RUN echo ${name} four > /4`,
      'COPY src.txt /',
      'RUN cat /1 /src.txt > /out',
      '',
    ].join('\n'),
  );
  return dir;
}

async function measure(mode, base, work) {
  const nats = await startKilnNats();
  let cluster;
  try {
    cluster = await startKilnCluster(nats, [
      { tier: 'solver', args: ['--placement', mode] },
      'frontend',
      'exporters',
      'content',
      { tier: 'worker-oci', id: 'w-a' },
      { tier: 'worker-oci', id: 'w-b' },
    ]);
    for (const deadline = Date.now() + 30_000; ; ) {
      const out = await new Promise((resolve) => {
        const p = spawn(kiln, ['workers', '--addr', cluster.addr], { env: { ...process.env, ...cluster.env }, stdio: ['ignore', 'pipe', 'ignore'] });
        let s = '';
        p.stdout.on('data', (d) => (s += d));
        p.on('close', () => resolve(s));
      });
      if (out.includes('w-a') && out.includes('w-b')) break;
      if (Date.now() > deadline) throw new Error('workers never both listed');
      await new Promise((r) => setTimeout(r, 200));
    }
    const dirs = PROJECTS.map((p) => makeProject(join(work, mode), p, base));
    const order = Array.from({ length: builds }, (_, i) => i % PROJECTS.length);
    let total = 0;
    let cached = 0;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < order.length; i += 2) {
      const pair = order.slice(i, i + 2);
      const results = await Promise.all(
        pair.map((p, j) => {
          const dir = dirs[p];
          writeFileSync(join(dir, 'src.txt'), `build ${i + j}\n`);
          return run(['build', '--addr', cluster.addr, '--progress=plain', '-o', `type=local,dest=${join(dir, `out-${i + j}`)}`, dir], cluster.env);
        }),
      );
      for (const r of results) {
        const s = runSteps(r);
        total += s.total;
        cached += s.cached;
      }
    }
    const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
    return { mode, builds: order.length, total, cached, wallS };
  } finally {
    await cluster?.stop();
    await nats.stop();
  }
}

const work = mkdtempSync(join(tmpdir(), 'kiln-bench-placement-'));
const registry = await startRegistry();
try {
  const base = (await pushBusyboxImage(registry, work, 'bench/placement', 'base', { applets: ['sh', 'echo', 'cat', 'sleep'] })).ref;
  const rows = [];
  for (const mode of ['cache', 'load']) {
    const r = await measure(mode, base, work);
    console.log(`${mode}: ${r.cached}/${r.total} RUN steps cached, ${r.wallS.toFixed(1)} s`);
    rows.push(r);
  }
  const table = [
    '# Cache-aware placement',
    '',
    `Split cluster, two OCI workers, ${builds} builds of 3 projects alternating, two at a time; each build: FROM + 4 RUNs (the first sleeps 1 s) + an edited COPY + 1 RUN. One run per mode, fresh cluster each, ${new Date().toISOString().slice(0, 16)}Z. Load average ${loadavg()[0].toFixed(1)} at the end.`,
    '',
    '| placement | builds | RUN steps | cached | cached % | wall time (s) | per build (s) |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map((r) => `| ${r.mode === 'cache' ? 'cache-aware (default)' : 'least busy (`--placement load`)'} | ${r.builds} | ${r.total} | ${r.cached} | ${((100 * r.cached) / r.total).toFixed(0)}% | ${r.wallS.toFixed(1)} | ${(r.wallS / r.builds).toFixed(2)} |`),
    '',
  ];
  console.log(table.join('\n'));
  mkdirSync(join(repo, 'bench-results'), { recursive: true });
  writeFileSync(join(repo, 'bench-results', 'placement.md'), table.join('\n'));
} finally {
  await registry.stop();
  rmSync(work, { recursive: true, force: true });
}
