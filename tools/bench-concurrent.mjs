#!/usr/bin/env node
// Concurrent builds sharing a base (issue 17's target: "20 concurrent builds
// of different projects sharing a base: each shared step runs once; total
// <= 0.8x BuildKit"). Generates PROJECTS (default 20) small projects whose
// Dockerfiles share a prefix (FROM a busybox base + 3 identical RUNs, the
// first sleeping 1 s) and then differ (COPY of their own files + their own
// RUN), then starts all `kiln build -t` at once against one default daemon
// (started by the first CLI, as a user gets it) and, in the same run, all
// `DOCKER_BUILDKIT=1 docker build -t` at once against a private dockerd
// (testkit's startDockerd, its embedded BuildKit) on the same base layer.
//
// How often each shared step ran is counted from its side effect: every
// shared RUN writes a random UUID into its layer, so each run of it makes a
// different layer; the distinct layer digests of that step over all images
// = how many times it ran (the layers are read from each image afterwards,
// untimed: Kiln's from a cached OCI export, dockerd's from `image inspect`).
// Rounds (BENCH_ROUNDS, default 3) alternate Kiln and BuildKit; each round
// salts the shared steps, so nothing is cached from an earlier round.
// Writes bench-results/concurrent.md.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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
const { startRegistry, startDockerd, findDockerd, busyboxLayer, pushBusyboxImage } = await import(pathToFileURL(testkitPath).href);
const PROJECTS = Number(process.env.BENCH_PROJECTS ?? 20);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const SHARED = 3;
const APPLETS = ['sh', 'sleep', 'cat', 'echo', 'mkdir', 'ls', 'wc'];

/**
 * CPU accounting of one builder: a cpuacct cgroup (v1) that its CLIs enter
 * before they exec, and its daemons inherit from the process starting them.
 * Machine load does not change it, unlike wall time. Undefined where no
 * cgroup can be made (not root, no cpuacct hierarchy).
 */
function cpuGroup(name) {
  const dir = `/sys/fs/cgroup/cpuacct/kiln-bench-${name}-${process.pid}`;
  try {
    mkdirSync(dir);
  } catch {
    return undefined;
  }
  const usageMs = () => Number(readFileSync(join(dir, 'cpuacct.usage'), 'utf8')) / 1e6;
  return {
    /** `cmd args` run inside the group. */
    wrap: (cmd, args) => ['/bin/sh', ['-c', `echo $$ > ${dir}/cgroup.procs && exec "$0" "$@"`, cmd, ...args]],
    /** Runs `fn` with this process in the group, so what it starts stays there. */
    async inside(fn) {
      writeFileSync(join(dir, 'cgroup.procs'), String(process.pid));
      try {
        return await fn();
      } finally {
        writeFileSync('/sys/fs/cgroup/cpuacct/cgroup.procs', String(process.pid));
      }
    },
    usageMs,
    remove() {
      for (const pid of readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
        try {
          writeFileSync('/sys/fs/cgroup/cpuacct/cgroup.procs', pid);
        } catch {
          // gone meanwhile
        }
      }
      try {
        execFileSync('rmdir', [dir]);
      } catch {
        // already removed
      }
    },
  };
}
const groups = { kiln: cpuGroup('kiln'), buildkit: cpuGroup('buildkit') };

function run(cmd, args, env, group) {
  return new Promise((resolve, reject) => {
    const [c, a] = group ? group.wrap(cmd, args) : [cmd, args];
    const p = spawn(c, a, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(' ')} exited ${code}:\n${out.slice(-4000)}`))));
  });
}

/** Project `i` of round `round`: the shared prefix (salted per round), then its own files and step. */
function makeProject(dir, base, round, i) {
  mkdirSync(join(dir, 'src'), { recursive: true });
  for (let f = 0; f < 5; f++) writeFileSync(join(dir, 'src', `f${f}.txt`), `project ${i} file ${f}\n`.repeat(50));
  writeFileSync(
    join(dir, 'Dockerfile'),
    [
      `FROM ${base}`,
      `RUN sleep 1 && mkdir -p /shared && cat /proc/sys/kernel/random/uuid > /shared/1 && echo round-${round} >> /shared/1`,
      `RUN cat /proc/sys/kernel/random/uuid > /shared/2 && echo round-${round} >> /shared/2`,
      `RUN cat /proc/sys/kernel/random/uuid > /shared/3 && echo round-${round} >> /shared/3`,
      'COPY src/ /app/',
      `RUN ls /app | wc -l > /app/count && echo project-${i} > /app/name`,
      '',
    ].join('\n'),
  );
}

/** Starts every build at once; resolves with the wall time (s) from the first spawn to the last exit. */
async function concurrently(argsOf, cmd, env, group) {
  const cpu0 = group?.usageMs();
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: PROJECTS }, (_, i) => run(cmd, argsOf(i), env, group)));
  const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
  return { wallS, cpuS: group ? (group.usageMs() - cpu0) / 1000 : undefined };
}

/** Per shared step, the number of distinct layers the images hold (= times it ran). */
function runsPerStep(layersByImage) {
  return Array.from({ length: SHARED }, (_, s) => new Set(layersByImage.map((layers) => layers[1 + s])).size);
}

/** The diff ids of a Kiln image, read from a cached OCI export of the project. */
async function kilnLayers(dir, env) {
  const tar = join(dir, 'image.tar');
  await run(kiln, ['build', '--progress=quiet', '-o', `type=oci,dest=${tar}`, dir], env);
  const read = (name) => JSON.parse(execFileSync('tar', ['-xOf', tar, name], { encoding: 'utf8', maxBuffer: 16 << 20 }));
  const blob = (digest) => `blobs/sha256/${digest.slice('sha256:'.length)}`;
  const manifest = read(blob(read('index.json').manifests[0].digest));
  return read(blob(manifest.config.digest)).rootfs.diff_ids;
}

const work = mkdtempSync(join(tmpdir(), 'kiln-bench-concurrent-'));
const registry = await startRegistry();
let dockerd;
const kilnEnv = { ...process.env, KILN_ROOT: join(work, 'daemon'), KILN_ADDR: '', KILN_LOG_LEVEL: 'warn' };
const rows = [];
try {
  const pushed = await pushBusyboxImage(registry, work, 'bench/concurrent', 'base', { applets: APPLETS, dirs: ['tmp', 'proc'] });
  dockerd = await (groups.buildkit ? groups.buildkit.inside(() => startDockerd()) : startDockerd());
  const layer = busyboxLayer(work, { applets: APPLETS, dirs: ['tmp', 'proc'] });
  writeFileSync(join(work, 'base.tar'), layer.tar);
  const imp = await dockerd.docker(['import', '--change', 'ENV PATH=/bin', join(work, 'base.tar'), 'bench-concurrent-base:local']);
  if (imp.code !== 0) throw new Error(`docker import: ${imp.stderr}`);
  const dockerEnv = { ...dockerd.env, DOCKER_BUILDKIT: '1' };
  const docker = process.env.KILN_DOCKER || '/usr/bin/docker';

  // Warm-up (untimed): starts Kiln's daemon and pulls the base; dockerd has it imported.
  const warm = join(work, 'warm');
  mkdirSync(warm);
  writeFileSync(join(warm, 'Dockerfile'), `FROM ${pushed.ref}\nRUN echo warm > /warm\n`);
  await run(kiln, ['build', '--progress=plain', '-t', 'bench-concurrent-warm:latest', warm], kilnEnv, groups.kiln);
  writeFileSync(join(warm, 'Dockerfile'), 'FROM bench-concurrent-base:local\nRUN echo warm > /warm\n');
  await run(docker, ['build', '--network=none', '--progress=plain', '-t', 'bench-concurrent-warm:latest', warm], dockerEnv, groups.buildkit);

  for (let round = 0; round < ROUNDS; round++) {
    for (const who of round % 2 === 0 ? ['kiln', 'buildkit'] : ['buildkit', 'kiln']) {
      const dirs = Array.from({ length: PROJECTS }, (_, i) => join(work, `${who}-r${round}`, `p${i}`));
      dirs.forEach((d, i) => makeProject(d, who === 'kiln' ? pushed.ref : 'bench-concurrent-base:local', round, i));
      const tag = (i) => `bench-concurrent-p${i}:r${round}`;
      let took;
      let layers;
      if (who === 'kiln') {
        took = await concurrently((i) => ['build', '--progress=plain', '-t', tag(i), dirs[i]], kiln, kilnEnv, groups.kiln);
        layers = [];
        for (const d of dirs) layers.push(await kilnLayers(d, kilnEnv));
      } else {
        took = await concurrently((i) => ['build', '--network=none', '--progress=plain', '-t', tag(i), dirs[i]], docker, dockerEnv, groups.buildkit);
        layers = [];
        for (let i = 0; i < PROJECTS; i++) {
          const r = await dockerd.docker(['image', 'inspect', '--format', '{{json .RootFS.Layers}}', tag(i)]);
          if (r.code !== 0) throw new Error(`docker image inspect ${tag(i)}: ${r.stderr}`);
          layers.push(JSON.parse(r.stdout));
        }
      }
      const runs = runsPerStep(layers);
      const cpu = took.cpuS === undefined ? '' : `, ${took.cpuS.toFixed(2)} s of CPU`;
      console.log(`round ${round} ${who}: ${took.wallS.toFixed(2)} s${cpu}, shared steps ran ${runs.join('/')} times`);
      rows.push({ round, who, ...took, runs });
    }
  }
} finally {
  const pid = join(work, 'daemon', 'kilnd.pid');
  if (existsSync(pid)) {
    try {
      process.kill(Number(readFileSync(pid, 'utf8')), 'SIGTERM');
    } catch {
      // already gone
    }
  }
  await dockerd?.stop();
  await registry.stop();
  await new Promise((r) => setTimeout(r, 2000));
  rmSync(work, { recursive: true, force: true });
  for (const g of Object.values(groups)) g?.remove();
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const of = (who) => rows.filter((r) => r.who === who);
const k = median(of('kiln').map((r) => r.wallS));
const d = median(of('buildkit').map((r) => r.wallS));
const cpuOf = (who) => (groups[who] ? median(of(who).map((r) => r.cpuS)) : undefined);
const kc = cpuOf('kiln');
const dc = cpuOf('buildkit');
const cpuCell = (c) => (c === undefined ? 'n/a' : `${c.toFixed(2)} s`);
const runsText = (who) => of(who).map((r) => r.runs.join('/')).join(', ');
const commit = (() => {
  try {
    return execFileSync('git', ['-C', repo, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
})();
const dockerVersion = (() => {
  try {
    return execFileSync(findDockerd() ?? 'dockerd', ['--version'], { encoding: 'utf8' }).trim();
  } catch {
    return 'dockerd';
  }
})();
const table = [
  '# Concurrent builds sharing a base',
  '',
  `${PROJECTS} projects started at once, ${ROUNDS} rounds (Kiln and BuildKit alternating, shared steps salted per round). Each Dockerfile: FROM a busybox base, ${SHARED} identical RUNs (the first sleeps 1 s; each writes a random UUID, so every run of it makes a new layer), then a COPY of its own files and its own RUN. Kiln ${commit}: \`kiln build -t\` against one default daemon; BuildKit: \`DOCKER_BUILDKIT=1 docker build -t\` (${dockerVersion}, a private dockerd). Times: first start to last exit. Runs of each shared step = distinct layers of it over the ${PROJECTS} images. Load average ${loadavg()[0].toFixed(1)} at the end, ${new Date().toISOString().slice(0, 16)}Z.`,
  '',
  '| builder | total (median) | rounds (s) | ratio to BuildKit | CPU per round (median) | CPU ratio | runs of shared steps 1/2/3, per round |',
  '| --- | ---: | --- | ---: | ---: | ---: | --- |',
  `| Kiln | ${k.toFixed(2)} s | ${of('kiln').map((r) => r.wallS.toFixed(2)).join(', ')} | ${(k / d).toFixed(2)}x | ${cpuCell(kc)} | ${kc && dc ? `${(kc / dc).toFixed(2)}x` : 'n/a'} | ${runsText('kiln')} |`,
  `| BuildKit (dockerd) | ${d.toFixed(2)} s | ${of('buildkit').map((r) => r.wallS.toFixed(2)).join(', ')} | 1.00x | ${cpuCell(dc)} | 1.00x | ${runsText('buildkit')} |`,
  '',
  'CPU: every process of the builder (CLIs, daemons, runc, shims; not the steps\' own processes, which runc moves to their own cgroups), from a cpuacct cgroup per builder: unlike wall time, it does not depend on what else the machine runs.',
  '',
].join('\n');
console.log(table);
mkdirSync(join(repo, 'bench-results'), { recursive: true });
writeFileSync(join(repo, 'bench-results', 'concurrent.md'), table);
