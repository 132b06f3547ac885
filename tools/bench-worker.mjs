#!/usr/bin/env node
// The OCI worker's exec path (run after `npm run build`; needs root, runc and
// Debian's busybox-static):
//  1. container start-to-exit of `/bin/true` through the runc executor
//     (bundle + config.json, runc run, delete), median and p90 over 50 runs;
//  2. 8 parallel `sleep 1` exec steps through the whole worker (snapshot
//     prepare, /etc/hosts, runc, commit), wall time for all 8
//     (maxParallelExecs 8; target < 1.5 s).
// Writes bench-results/worker.md. Env: BENCH_TRUE_RUNS (default 50).
import { copyFileSync, chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = (pkg, file = 'index.js') => pathToFileURL(join(repo, 'packages', pkg, 'dist', file)).href;
if (!existsSync(join(repo, 'packages', 'worker-oci', 'dist', 'index.js'))) {
  console.error('packages/worker-oci/dist is missing: run `npm run build` first');
  process.exit(1);
}
const { createRuncExecutor, createOciWorker } = await import(dist('worker-oci'));
// Single modules, not the testing barrel (which loads vitest for the conformance suite).
const { createFakeSession } = await import(dist('worker', 'testing/fake-session.js'));
const { solve } = await import(dist('worker', 'testing/solve.js'));
const { execState } = await import(dist('worker', 'testing/exec-state.js'));
const { local } = await import(dist('llb'));

const TRUE_RUNS = Number(process.env.BENCH_TRUE_RUNS ?? 50);
const PARALLEL = 8;
const work = mkdtempSync(join(tmpdir(), 'kiln-bench-worker-'));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const p90 = (xs) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * 0.9))];

function busyboxRootfs(dir) {
  mkdirSync(join(dir, 'bin'), { recursive: true });
  copyFileSync('/bin/busybox', join(dir, 'bin', 'busybox'));
  chmodSync(join(dir, 'bin', 'busybox'), 0o755);
  for (const a of ['sh', 'true', 'sleep']) symlinkSync('busybox', join(dir, 'bin', a));
  return dir;
}

try {
  const rootfs = busyboxRootfs(join(work, 'rootfs'));
  const executor = createRuncExecutor({ stateDir: join(work, 'runc') });
  const spec = {
    rootfs,
    readonlyRootfs: false,
    mounts: [],
    process: { args: ['/bin/true'], env: ['PATH=/bin'], cwd: '/', user: { uid: 0, gid: 0, additionalGids: [] } },
    network: 'sandbox',
    hostname: 'kiln',
    security: 'sandbox',
    rlimits: [],
  };
  await executor.run(spec); // warm-up (reap, page cache)
  const trueMs = [];
  for (let i = 0; i < TRUE_RUNS; i++) {
    const t = performance.now();
    const { exitCode } = await executor.run(spec);
    trueMs.push(performance.now() - t);
    if (exitCode !== 0) throw new Error(`true exited ${exitCode}`);
  }
  console.error(`true: median ${median(trueMs).toFixed(1)} ms over ${TRUE_RUNS}`);

  const session = createFakeSession({ rootfs: { dir: rootfs } });
  const worker = createOciWorker({ id: 'bench', root: join(work, 'worker'), sessions: session.client, publish: async () => undefined, maxParallelExecs: PARALLEL });
  // Transfer the rootfs once, then time only the exec steps on it: in one
  // build the solver runs the shared source once and the 8 steps after it.
  const rootRef = await solve(worker, local('rootfs'));
  const steps = Array.from({ length: PARALLEL }, (_, i) => execState(local('rootfs'), ['/bin/sleep', '1'], { env: [`STEP=${i}`] }).output.vertex.marshal());
  const runStep = ({ bytes, digest }) => worker.run({ buildId: 'bench', sessionId: 'session-1', vertexDigest: digest, op: bytes, inputRefs: [rootRef] });
  const t = performance.now();
  const results = await Promise.all(steps.map(runStep));
  const parallelS = (performance.now() - t) / 1000;
  await worker.release([rootRef, ...results.flatMap((r) => r.outputRefs)]);
  await worker.close();
  console.error(`${PARALLEL} × sleep 1: ${parallelS.toFixed(2)} s`);

  const table = [
    `OCI worker exec path, ${availableParallelism()} × ${cpus()[0]?.model ?? 'unknown CPU'} (shared; load average ${loadavg()[0].toFixed(1)} at the end), node ${process.version}.`,
    '',
    '| what | result | target |',
    '| --- | ---: | ---: |',
    `| \`/bin/true\` start-to-exit through the runc executor, median of ${TRUE_RUNS} | ${median(trueMs).toFixed(1)} ms (p90 ${p90(trueMs).toFixed(1)} ms) | |`,
    `| ${PARALLEL} parallel \`sleep 1\` exec steps through the worker (overlay snapshots, maxParallelExecs ${PARALLEL}), wall time | ${parallelS.toFixed(2)} s | < 1.5 s |`,
    '',
  ].join('\n');
  console.log(table);
  mkdirSync(join(repo, 'bench-results'), { recursive: true });
  writeFileSync(join(repo, 'bench-results', 'worker.md'), `# Worker bench\n\n${table}`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
