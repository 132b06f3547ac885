#!/usr/bin/env node
// Daemon memory over many builds (issue 17's target: "the daemon's memory
// after 1,000 builds stays within 1.5x of after 10"). One all-in-one daemon
// with the default settings (started here, under `node --inspect` on a
// random loopback port so the heap can be read), then BENCH_BUILDS (default
// 1000) small `kiln build -t` runs, a new CLI process each, BENCH_PARALLEL
// (default 4) at a time, over 4 projects: FROM a busybox base, a RUN, a COPY
// of src.txt and a RUN reading it. Every 5th build edits its project's
// src.txt first (the COPY and the last RUN run), the rest are fully cached.
// After 10, 100, 500 and 1000 builds (while no build runs) it forces a full
// GC over the inspector (HeapProfiler.collectGarbage) and samples the
// daemon's RSS (/proc/PID/status VmRSS) and V8 heap (Runtime.getHeapUsage).
// BENCH_HEAP_SNAPSHOTS=DIR also writes a heap snapshot at each sample (for
// finding a leak; slow). Writes bench-results/memory.md.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, createWriteStream } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const kiln = join(repo, 'bin', 'kiln');
const testkitPath = join(repo, 'packages', 'testkit', 'dist', 'index.js');
if (!existsSync(testkitPath)) {
  console.error(`${testkitPath} is missing: run \`npm run build\` first`);
  process.exit(1);
}
const { startRegistry, pushBusyboxImage } = await import(pathToFileURL(testkitPath).href);
const { WebSocket } = await import('ws');
const BUILDS = Number(process.env.BENCH_BUILDS ?? 1000);
const PARALLEL = Number(process.env.BENCH_PARALLEL ?? 4);
const SNAPSHOTS = process.env.BENCH_HEAP_SNAPSHOTS;
const SAMPLES = (process.env.BENCH_SAMPLES ?? '10,100,500,1000').split(',').map(Number).filter((n) => n <= BUILDS);
if (!SAMPLES.includes(BUILDS)) SAMPLES.push(BUILDS);
const PROJECTS = 4;

function run(args, env) {
  return new Promise((resolve, reject) => {
    const p = spawn(kiln, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => (err += d));
    p.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`kiln ${args.join(' ')} exited ${code}:\n${err.slice(-4000)}`))));
  });
}

/** A minimal Chrome DevTools protocol client over the daemon's inspector socket. */
async function inspector(url) {
  const ws = new WebSocket(url);
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  let id = 0;
  const pending = new Map();
  const listeners = new Map();
  ws.on('message', (data) => {
    const msg = JSON.parse(data.toString());
    if (msg.id !== undefined) {
      const p = pending.get(msg.id);
      pending.delete(msg.id);
      if (msg.error) p?.reject(new Error(msg.error.message));
      else p?.resolve(msg.result);
    } else listeners.get(msg.method)?.(msg.params);
  });
  const send = (method, params = {}) =>
    new Promise((resolve, reject) => {
      pending.set(++id, { resolve, reject });
      ws.send(JSON.stringify({ id, method, params }));
    });
  return { send, on: (method, fn) => listeners.set(method, fn), close: () => ws.close() };
}

function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0);
}

async function sample(cdp, pid, builds) {
  await cdp.send('HeapProfiler.collectGarbage');
  await cdp.send('HeapProfiler.collectGarbage');
  const heap = await cdp.send('Runtime.getHeapUsage');
  const usage = JSON.parse((await cdp.send('Runtime.evaluate', { expression: 'JSON.stringify(process.memoryUsage())', returnByValue: true })).result.value);
  const mib = (n) => n / 2 ** 20;
  const s = { builds, rssMiB: rssKiB(pid) / 1024, heapMiB: mib(heap.usedSize), heapTotalMiB: mib(usage.heapTotal), externalMiB: mib(usage.external), arrayBuffersMiB: mib(usage.arrayBuffers) };
  if (SNAPSHOTS) {
    mkdirSync(SNAPSHOTS, { recursive: true });
    const out = createWriteStream(join(SNAPSHOTS, `daemon-${builds}.heapsnapshot`));
    cdp.on('HeapProfiler.addHeapSnapshotChunk', ({ chunk }) => out.write(chunk));
    await cdp.send('HeapProfiler.takeHeapSnapshot', { reportProgress: false });
    await new Promise((r) => out.end(r));
  }
  console.log(`after ${builds} builds: RSS ${s.rssMiB.toFixed(1)} MiB, heap ${s.heapMiB.toFixed(1)} MiB of ${s.heapTotalMiB.toFixed(1)}, external ${s.externalMiB.toFixed(1)} MiB (array buffers ${s.arrayBuffersMiB.toFixed(1)})`);
  return s;
}

const work = mkdtempSync(join(tmpdir(), 'kiln-bench-memory-'));
const registry = await startRegistry();
const root = join(work, 'daemon');
const addr = `unix://${join(work, 'kiln.sock')}`;
const env = { ...process.env, KILN_ADDR: addr, KILN_LOG_LEVEL: 'warn' };
let daemon;
const samples = [];
let wallS = 0;
try {
  const base = (await pushBusyboxImage(registry, work, 'bench/memory', 'base', { applets: ['sh', 'echo', 'cat'] })).ref;
  const dirs = Array.from({ length: PROJECTS }, (_, p) => {
    const dir = join(work, `p${p}`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'Dockerfile'), `FROM ${base}\nRUN echo project ${p} > /p\nCOPY src.txt /\nRUN cat /p /src.txt > /out\n`);
    writeFileSync(join(dir, 'src.txt'), 'v0\n');
    return dir;
  });

  mkdirSync(root, { recursive: true });
  // bin/kilnd's environment (its malloc setting, see packages/cli/src/daemon-env.ts; BENCH_MALLOC_DEFAULT=glibc measures without it), with node's --inspect added.
  const malloc = process.env.BENCH_MALLOC_DEFAULT === 'glibc' ? {} : { MALLOC_MMAP_THRESHOLD_: process.env.MALLOC_MMAP_THRESHOLD_ || '131072' };
  daemon = spawn(process.execPath, ['--inspect=127.0.0.1:0', join(repo, 'bin', 'kiln.mjs'), 'daemon', '--root', root, '--addr', addr], {
    env: { ...env, ...malloc, KILN_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const wsUrl = await new Promise((resolve, reject) => {
    let text = '';
    daemon.stderr.on('data', (d) => {
      text += d;
      const m = /Debugger listening on (ws:\/\/\S+)/.exec(text);
      if (m) resolve(m[1]);
    });
    daemon.once('exit', (code) => reject(new Error(`daemon exited ${code}:\n${text}`)));
  });
  const cdp = await inspector(wsUrl);
  for (const deadline = Date.now() + 30_000; ; ) {
    try {
      await run(['workers'], env);
      break;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  let next = 0;
  let edits = 0;
  const t0 = process.hrtime.bigint();
  for (const target of SAMPLES) {
    const worker = async () => {
      while (next < target) {
        const i = next++;
        const dir = dirs[i % PROJECTS];
        if (i % 5 === 0) writeFileSync(join(dir, 'src.txt'), `edit ${++edits}\n`);
        await run(['build', '--progress=plain', '-t', `bench-memory-p${i % PROJECTS}:latest`, dir], env);
      }
    };
    await Promise.all(Array.from({ length: PARALLEL }, worker));
    wallS = Number(process.hrtime.bigint() - t0) / 1e9;
    samples.push(await sample(cdp, daemon.pid, target));
  }
  cdp.close();
} finally {
  daemon?.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 3000));
  await registry.stop();
  rmSync(work, { recursive: true, force: true });
}

const first = samples[0];
const commit = (() => {
  try {
    return execFileSync('git', ['-C', repo, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
})();
const table = [
  '# Daemon memory over many builds',
  '',
  `Kiln ${commit}: one all-in-one daemon (default settings, ${process.env.BENCH_MALLOC_DEFAULT === 'glibc' ? "glibc's default malloc settings" : "bin/kilnd's malloc setting"}, under \`--inspect\`), ${BUILDS} \`kiln build -t\` runs (a new CLI each, ${PARALLEL} at a time, 4 projects, every 5th build edits its project so its COPY and last RUN run, the others fully cached) in ${wallS.toFixed(0)} s. Sampled while idle, after two forced full GCs. Load average ${loadavg()[0].toFixed(1)} at the end, ${new Date().toISOString().slice(0, 16)}Z.`,
  '',
  `| builds | RSS | x after ${first.builds} | V8 heap used | x after ${first.builds} | heap reserved | external (array buffers) |`,
  '| ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ...samples.map(
    (s) =>
      `| ${s.builds} | ${s.rssMiB.toFixed(1)} MiB | ${(s.rssMiB / first.rssMiB).toFixed(2)} | ${s.heapMiB.toFixed(1)} MiB | ${(s.heapMiB / first.heapMiB).toFixed(2)} | ${s.heapTotalMiB.toFixed(1)} MiB | ${s.externalMiB.toFixed(1)} MiB (${s.arrayBuffersMiB.toFixed(1)}) |`,
  ),
  '',
].join('\n');
console.log(table);
mkdirSync(join(repo, 'bench-results'), { recursive: true });
writeFileSync(join(repo, 'bench-results', 'memory.md'), table);
