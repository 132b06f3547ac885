#!/usr/bin/env node
// Solver scenarios side by side (run after `npm run build`; needs root for
// runc and dockerd): the same Dockerfiles and contexts through `kiln build`
// (the all-in-one daemon, worker=oci, no output: the result stays in the
// cache) and `docker build --network=none` (BuildKit inside Debian's
// docker.io; a private dockerd from testkit: no bridge, no iptables).
// Both start FROM one small busybox image (Debian's busybox-static, every
// applet linked) pushed to a docker-registry on 127.0.0.1.
//  1. four independent stages sleeping 1.5 s each, then a stage copying their
//     outputs (no cache);
//  2. the same build again, fully cached;
//  3. 2,000 small files in the context, one changed, rebuild;
//  4. a 400 MB context of which the Dockerfile copies a 1 MB folder (first
//     build of that context), with the bytes each tool reports sending;
//  5. twenty builds of one Dockerfile submitted at once: how many times its
//     RUN step executed (each execution appends a line to a locked cache
//     mount, read back afterwards) and the wall time for all twenty.
// Writes bench-results/solver.md (npm run bench gathers it into bench/results/latest.md).
// Env: BENCH_RUNS (median of, default 3), BENCH_SOLVER_DIR (temp root),
// BENCH_SCENARIOS (comma-separated scenario numbers to run, e.g. `1,2,5`;
// 1 and 2 always run together; default all), BENCH_TOOLS (`kiln`, `docker`
// or both, the default). A partial run only prints its table.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const testkitPath = join(repo, 'packages', 'testkit', 'dist', 'index.js');
if (!existsSync(testkitPath)) {
  console.error(`${testkitPath} is missing: run \`npm run build\` first`);
  process.exit(1);
}
const { startKilnd, startDockerd, findDockerd, startRegistry, pushBusyboxImage } = await import(pathToFileURL(testkitPath).href);

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const CONCURRENT = 20;
const picked = process.env.BENCH_SCENARIOS ? new Set(process.env.BENCH_SCENARIOS.split(',').map((x) => x.trim())) : undefined;
const want = (n) => !picked || picked.has(String(n)) || (n === 1 && picked.has('2')) || (n === 2 && picked.has('1'));
const tools = new Set((process.env.BENCH_TOOLS ?? 'kiln,docker').split(',').map((x) => x.trim()));
const kiln = join(repo, 'bin', 'kiln');
const dockerCli = existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';
const work = mkdtempSync(join(process.env.BENCH_SOLVER_DIR ?? tmpdir(), 'kiln-bench-solver-'));
const median = (xs) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] : undefined);

/** Runs a command to completion; resolves with wall seconds and the combined output. */
function timed(cmd, args, env = {}) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const p = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const keep = (d) => (out = (out + d).slice(-400_000));
    p.stdout.on('data', keep);
    p.stderr.on('data', keep);
    p.on('error', reject);
    p.on('close', (code) => {
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      if (code !== 0) reject(new Error(`${cmd} ${args.join(' ')} exited ${code}:\n${out.slice(-6000)}`));
      else resolve({ seconds, out });
    });
  });
}

function writeDockerfile(dir, text) {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'Dockerfile'), text);
  return dir;
}

/** Scenario 1/2: four sleeping stages and a collecting stage; `salt` makes each run's cache cold. */
function parallelContext(base, salt) {
  const stages = [1, 2, 3, 4].map((i) => `FROM ${base} AS s${i}\nRUN sleep 1.5 && echo ${salt}-${i} > /out${i}\n`).join('');
  const collect = `FROM ${base}\n${[1, 2, 3, 4].map((i) => `COPY --from=s${i} /out${i} /out${i}`).join('\n')}\n`;
  return writeDockerfile(join(work, `parallel-${salt}`), stages + collect);
}

/** Scenario 3: 2,000 small files, all copied, then a step that reads them. */
function manyFilesContext(base, name) {
  const dir = join(work, name);
  for (let d = 0; d < 20; d++) {
    mkdirSync(join(dir, 'src', `d${d}`), { recursive: true });
    for (let f = 0; f < 100; f++) writeFileSync(join(dir, 'src', `d${d}`, `f${f}.txt`), `file ${d}/${f} ${randomBytes(24).toString('hex')}\n`);
  }
  return writeDockerfile(dir, `FROM ${base}\nCOPY src /src\nRUN find /src -type f | wc -l > /count\n`);
}

/** Scenario 4: 400 MiB of files nobody copies, and a 1 MiB folder the Dockerfile copies. */
function bigContext(base) {
  const dir = join(work, 'big');
  mkdirSync(join(dir, 'data'), { recursive: true });
  mkdirSync(join(dir, 'app'), { recursive: true });
  for (let i = 0; i < 8; i++) {
    const fd = openSync(join(dir, 'data', `blob${i}.bin`), 'w');
    for (let m = 0; m < 50; m++) writeSync(fd, randomBytes(1 << 20));
    closeSync(fd);
  }
  for (let i = 0; i < 16; i++) writeFileSync(join(dir, 'app', `part${i}.bin`), randomBytes(64 << 10));
  return writeDockerfile(dir, `FROM ${base}\nCOPY app /app\nRUN ls /app | wc -l > /count\n`);
}

/** Scenario 5: one RUN step that records each execution in a locked cache mount. */
function concurrentContext(base, id) {
  return writeDockerfile(
    join(work, `concurrent-${id}`),
    `FROM ${base}\nRUN --mount=type=cache,id=${id},target=/c,sharing=locked echo ran >> /c/count && sleep 1\n`,
  );
}
function countContext(base, id) {
  return writeDockerfile(
    join(work, `count-${id}`),
    `FROM ${base}\nRUN --mount=type=cache,id=${id},target=/c,sharing=locked cat /c/count | wc -l > /runs; echo "runs=$(cat /runs)"\n`,
  );
}

/** Bytes the tool reports sending for the context ("transferring context: 1.05MB" / "transferring context: 1048576 bytes"). */
function contextBytes(out) {
  let max = 0;
  for (const m of out.matchAll(/transferring context:\s*([\d.]+)\s*([kKMG]?i?B|bytes)?/g)) {
    const n = Number(m[1]);
    const unit = (m[2] ?? 'B').toLowerCase();
    const mult = unit.startsWith('k') ? 1e3 : unit.startsWith('m') ? 1e6 : unit.startsWith('g') ? 1e9 : 1;
    max = Math.max(max, n * (unit.includes('i') ? (mult === 1e3 ? 1024 : mult === 1e6 ? 2 ** 20 : 2 ** 30) : mult));
  }
  return max;
}
const runsFrom = (out) => Number(/runs=(\d+)/.exec(out)?.[1] ?? NaN);

/** The five scenarios for one tool; `build(args, ctx)` runs one build and resolves {seconds, out}. */
async function scenarios(tool, build, base) {
  const r = {};
  const cold = [];
  const warm = [];
  for (let i = 0; want(1) && i < RUNS; i++) {
    const ctx = parallelContext(base, `${tool}-${i}-${Date.now()}`);
    cold.push((await build([], ctx)).seconds);
    warm.push((await build([], ctx)).seconds);
  }
  r.parallel = median(cold);
  r.cached = median(warm);

  if (want(3)) await manyFiles(tool, build, base, r);
  if (want(4)) await bigOne(build, base, r);
  if (want(5)) await concurrent(tool, build, base, r);
  return r;
}

async function manyFiles(tool, build, base, r) {
  const many = [];
  const mctx = manyFilesContext(base, `many-${tool}`);
  await build([], mctx);
  for (let i = 0; i < RUNS; i++) {
    writeFileSync(join(mctx, 'src', 'd7', 'f42.txt'), `changed ${tool} ${i} ${Date.now()}\n`);
    many.push((await build([], mctx)).seconds);
  }
  r.manyFiles = median(many);
}

async function bigOne(build, base, r) {
  const big = await build([], bigContext(base));
  r.bigContext = big.seconds;
  r.bigBytes = contextBytes(big.out);
  rmSync(join(work, 'big'), { recursive: true, force: true });
}

async function concurrent(tool, build, base, r) {
  const id = `bench-${tool}-${Date.now()}`;
  const ctx = concurrentContext(base, id);
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: CONCURRENT }, () => build([], ctx)));
  r.concurrentWall = Number(process.hrtime.bigint() - t0) / 1e9;
  // No --no-cache here: BuildKit then starts cache mounts empty too.
  r.concurrentRuns = runsFrom((await build([], countContext(base, id))).out);
}

const results = {};
let registry;
let daemon;
let dockerd;
let dockerNote = '';
try {
  registry = await startRegistry();
  const base = (await pushBusyboxImage(registry, work, 'bench/busybox', '1', { applets: 'all', dirs: ['tmp'] })).ref;
  if (tools.has('kiln')) {
    daemon = await startKilnd({ worker: 'oci', env: { KILN_LOG_LEVEL: 'info' } });
    results.kiln = await scenarios('kiln', (args, ctx) => timed(kiln, ['build', '--addr', daemon.addr, '--progress=plain', ...args, ctx]), base);
    await daemon.stop();
    daemon = undefined;
  }
  if (!tools.has('docker')) {
    dockerNote = ' (docker skipped: BENCH_TOOLS)';
  } else if (process.getuid?.() === 0 && findDockerd()) {
    dockerd = await startDockerd();
    const env = { DOCKER_HOST: dockerd.host, DOCKER_BUILDKIT: '1', DOCKER_CONFIG: dockerd.env.DOCKER_CONFIG };
    results.docker = await scenarios('docker', (args, ctx) => timed(dockerCli, ['build', '--network=none', '--progress=plain', ...args, ctx], env), base);
  } else {
    dockerNote = ' (docker skipped: needs root and dockerd)';
  }
} finally {
  await daemon?.stop();
  await dockerd?.stop();
  await registry?.stop();
  rmSync(work, { recursive: true, force: true });
}

const k = results.kiln ?? {};
const d = results.docker ?? {};
const s = (x) => (x === undefined || Number.isNaN(x) ? 'n/a' : `${x.toFixed(2)} s`);
const ratio = (a, b) => (a !== undefined && b ? `${(a / b).toFixed(2)}x` : 'n/a');
const mb = (b) => (b === undefined ? 'n/a' : b ? `${(b / 1e6).toFixed(2)} MB` : 'not reported');
const rows = [
  ['1. four 1.5 s stages in parallel + collect (no cache)', s(k.parallel), s(d.parallel), ratio(k.parallel, d.parallel), '<= 1.05x'],
  ['2. the same build, fully cached', s(k.cached), s(d.cached), ratio(k.cached, d.cached), '<= 1.0x'],
  ['3. 2,000 files, one changed, rebuild', s(k.manyFiles), s(d.manyFiles), ratio(k.manyFiles, d.manyFiles), '<= 1.0x'],
  ['4. 400 MB context, COPY of a 1 MB folder', s(k.bigContext), s(d.bigContext), ratio(k.bigContext, d.bigContext), '<= 1.0x'],
  ['4. bytes sent from the client', mb(k.bigBytes), mb(d.bigBytes), '-', '< 2 MB'],
  [`5. ${CONCURRENT} identical builds at once: wall time`, s(k.concurrentWall), s(d.concurrentWall), ratio(k.concurrentWall, d.concurrentWall), '-'],
  [`5. ${CONCURRENT} identical builds at once: RUN executions`, String(k.concurrentRuns), String(d.concurrentRuns ?? 'n/a'), '-', '1'],
];
const table = [
  `# Solver: kiln build vs docker build (BuildKit)${dockerNote}`,
  '',
  `Median of ${RUNS} runs where repeated; load average ${loadavg()[0].toFixed(1)} when written. kiln: all-in-one daemon (worker=oci), no output (the result stays in the cache). docker: Debian's docker.io (BuildKit inside dockerd, \`docker build --network=none\`; it also stores the image in dockerd). Both FROM the same busybox image on a docker-registry at 127.0.0.1. Wall time of the client command.`,
  '',
  '| scenario | kiln | docker (BuildKit) | ratio | target |',
  '| --- | --- | --- | --- | --- |',
  ...rows.map((r) => `| ${r.join(' | ')} |`),
  '',
].join('\n');
console.log(table);
// A partial run (BENCH_SCENARIOS / BENCH_TOOLS) prints only: the stored table stays whole.
if (!picked && tools.has('kiln') && tools.has('docker')) {
  mkdirSync(join(repo, 'bench-results'), { recursive: true });
  writeFileSync(join(repo, 'bench-results', 'solver.md'), table);
}
