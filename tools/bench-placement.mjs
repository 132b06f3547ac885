#!/usr/bin/env node
// Cache-aware placement (issue 15): a split cluster with three OCI workers
// builds 6 different projects in rounds of 12 builds (each project twice
// a round, in a fixed shuffled order, 3 builds at a time), once with the
// solver's `--placement cache` (the default: a build, and each branch of
// it, goes where its cache is, traded against load; steps other workers
// hold count by what a pull saves) and once with `--placement load` (the
// least busy worker, ties to the lowest id). Each project has two stages:
// `deps` (a RUN sleeping 1 s, standing in for an install, and a RUN writing
// 8 MB of random bytes: quick to run, slow to pull) and `tools` (a RUN
// sleeping 0.5 s), and a final stage on `deps` copying from `tools` plus 2
// RUNs. Per round: the RUN and COPY steps reported CACHED (a step pulled
// from another worker counts: it did not run) and the round's wall time.
// Fresh cluster per mode.
// Rounds: BENCH_PLACEMENT_ROUNDS (default 3), builds a round: BENCH_PLACEMENT_PER_ROUND (default 12), modes: BENCH_PLACEMENT_MODES (default cache,load). Writes bench-results/placement.md.
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
const { startKilnCluster, startKilnNats, startRegistry, pushBusyboxImage, waitForWorkers } = await import(pathToFileURL(testkitPath).href);
const rounds = Number(process.env.BENCH_PLACEMENT_ROUNDS ?? 3);
const PROJECTS = ['alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta'];
const WORKERS = ['w-a', 'w-b', 'w-c'];
const PER_ROUND = Number(process.env.BENCH_PLACEMENT_PER_ROUND ?? 12);
const AT_ONCE = 3;

function run(args, env) {
  return new Promise((resolve, reject) => {
    const p = spawn(kiln, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => (err += d));
    p.on('close', (code) => (code === 0 ? resolve(err) : reject(new Error(`kiln ${args.join(' ')} exited ${code}:\n${err}`))));
  });
}

/** RUN and COPY steps in plain progress and how many of them were CACHED. */
function steps(stderr) {
  const lines = stderr.split('\n');
  const ids = [...new Set(lines.map((l) => /^#(\d+) \[[^\]]*\] (RUN|COPY) /.exec(l)?.[1]).filter(Boolean))];
  const cached = ids.filter((id) => lines.some((l) => l === `#${id} CACHED`)).length;
  return { total: ids.length, cached };
}

function makeProject(work, name, base) {
  const dir = join(work, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, 'Dockerfile'),
    [
      `FROM ${base} AS deps`,
      `RUN sleep 1 && echo ${name} install > /deps`,
      `RUN head -c 8000000 /dev/urandom > /blob && echo ${name} > /blob.name`,
      `FROM ${base} AS tools`,
      `RUN sleep 0.5 && echo ${name} tools > /tools`,
      'FROM deps',
      'COPY --from=tools /tools /tools',
      `RUN cat /deps /tools > /both && echo ${name} >> /both`,
      `RUN wc -c /blob > /size`,
      '',
    ].join('\n'),
  );
  return dir;
}

/** A fixed shuffle (same order for both modes). */
function shuffled(items, seed) {
  const out = [...items];
  let s = seed;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) % 2147483648;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

async function measure(mode, base, work) {
  const nats = await startKilnNats();
  let cluster;
  try {
    cluster = await startKilnCluster(nats, [{ tier: 'solver', args: ['--placement', mode] }, 'frontend', 'exporters', 'content', ...WORKERS.map((id) => ({ tier: 'worker-oci', id }))]);
    await waitForWorkers(cluster, WORKERS, 60_000);
    const dirs = PROJECTS.map((p) => makeProject(join(work, mode), p, base));
    const perRound = [];
    for (let r = 0; r < rounds; r++) {
      const order = shuffled(Array.from({ length: PER_ROUND }, (_, i) => i % PROJECTS.length), 7 + r);
      let total = 0;
      let cached = 0;
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < order.length; i += AT_ONCE) {
        const batch = order.slice(i, i + AT_ONCE);
        const results = await Promise.all(batch.map((p) => run(['build', '--addr', cluster.addr, '--progress=plain', '-o', 'type=tar,dest=/dev/null', dirs[p]], cluster.env)));
        for (const res of results) {
          const s = steps(res);
          total += s.total;
          cached += s.cached;
        }
      }
      const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
      perRound.push({ round: r + 1, total, cached, wallS });
      console.log(`${mode} round ${r + 1}: ${cached}/${total} steps cached, ${wallS.toFixed(1)} s`);
    }
    return { mode, perRound };
  } finally {
    await cluster?.stop();
    await nats.stop();
  }
}

const work = mkdtempSync(join(tmpdir(), 'kiln-bench-placement-'));
const registry = await startRegistry();
try {
  const base = (await pushBusyboxImage(registry, work, 'bench/placement', 'base', { applets: ['sh', 'echo', 'cat', 'sleep', 'head', 'wc'] })).ref;
  // BENCH_PLACEMENT_MODES=cache (or load) runs one mode only, printing its rounds (no table).
  const wanted = (process.env.BENCH_PLACEMENT_MODES ?? 'cache,load').split(',');
  const modes = [];
  for (const mode of ['cache', 'load']) if (wanted.includes(mode)) modes.push(await measure(mode, base, work));
  if (modes.length === 2) writeTable(modes);
} finally {
  await registry.stop();
  rmSync(work, { recursive: true, force: true });
}

function writeTable([cache, load]) {
  const pct = (r) => `${((100 * r.cached) / r.total).toFixed(0)}% (${r.cached}/${r.total})`;
  const table = [
    '# Cache-aware placement',
    '',
    `Split cluster, three OCI workers; 6 projects (two stages: an install RUN sleeping 1 s, a RUN writing 8 MB of random bytes (quick to run, slow to pull), a RUN sleeping 0.5 s; a COPY --from and 2 RUNs), built in rounds of ${PER_ROUND} (each project ${PER_ROUND / PROJECTS.length} times a round, 3 builds at a time). Steps: RUN and COPY; a step pulled from another worker counts as cached. One run per mode, fresh cluster each, ${new Date().toISOString().slice(0, 16)}Z, load average ${loadavg()[0].toFixed(1)} at the end (a shared, loaded machine: compare modes, not absolute times).`,
    '',
    '| round | cache-aware: cached | cache-aware: time (s) | least busy: cached | least busy: time (s) |',
    '| ---: | ---: | ---: | ---: | ---: |',
    ...cache.perRound.map((r, i) => `| ${r.round} | ${pct(r)} | ${r.wallS.toFixed(1)} | ${pct(load.perRound[i])} | ${load.perRound[i].wallS.toFixed(1)} |`),
    '',
  ];
  console.log(table.join('\n'));
  mkdirSync(join(repo, 'bench-results'), { recursive: true });
  writeFileSync(join(repo, 'bench-results', 'placement.md'), table.join('\n'));
}
