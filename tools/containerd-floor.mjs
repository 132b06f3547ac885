#!/usr/bin/env node
// The floor of a RUN step on containerd vs runc (issue 14): N runs of `true` on an overlay root,
// interleaved, through (a) containerd's task API as Kiln's ContainerdExecutor drives it (shared
// shim group, rootfs mounts handed to the shim) and (b) `runc run` of the same spec on the same
// kind of overlay, mounted by us. Prints per-run wall ms (median), per-RPC ms and the CPU ms of
// containerd, the shim (with its runc children), runc and this process.
//   node tools/containerd-floor.mjs [-n 40] [--rounds 3]
// Needs a build (packages/*/dist), containerd and runc; starts a private containerd under a temp dir.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, copyFileSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = process.env.KILN_REPO ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const N = opt('-n', 40);
const ROUNDS = opt('--rounds', 3);
process.env.KILN_SPAWN_HELPER = '0'; // runc's CPU lands in this process's children

const { createContainerdClient } = await import(path.join(repo, 'packages/worker-containerd/dist/containerd/client.js'));
const { ContainerdExecutor } = await import(path.join(repo, 'packages/worker-containerd/dist/containerd/containerd-executor.js'));
const { createRuncExecutor } = await import(path.join(repo, 'packages/worker-oci/dist/runc/runc-executor.js'));

const dir = mkdtempSync(path.join(tmpdir(), 'kiln-floor-'));
const sock = path.join(dir, 'containerd.sock');
writeFileSync(
  path.join(dir, 'config.toml'),
  `version = 2\nroot = "${dir}/root"\nstate = "${dir}/state"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "${sock}"\n[ttrpc]\n  address = "${sock}.ttrpc"\n`,
);
const ctrd = spawn('containerd', ['--config', path.join(dir, 'config.toml')], { stdio: ['ignore', 'ignore', 'ignore'] });
for (let i = 0; i < 100 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 100));

// A busybox root as the lower layer.
const lower = path.join(dir, 'lower');
for (const d of ['bin', 'etc', 'proc', 'sys', 'dev', 'tmp']) mkdirSync(path.join(lower, d), { recursive: true });
copyFileSync('/usr/bin/busybox', path.join(lower, 'bin/busybox'));
spawnSync('chmod', ['755', path.join(lower, 'bin/busybox')]);
for (const t of ['sh', 'true']) symlinkSync('busybox', path.join(lower, 'bin', t));
writeFileSync(path.join(lower, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');

let seq = 0;
function overlay() {
  const d = path.join(dir, 'ov', String(seq++));
  for (const s of ['upper', 'work', 'merged']) mkdirSync(path.join(d, s), { recursive: true });
  return { d, options: ['index=off', 'redirect_dir=off', 'metacopy=off', `workdir=${d}/work`, `upperdir=${d}/upper`, `lowerdir=${lower}`] };
}
const spec = (rootfs) => ({
  rootfs,
  readonlyRootfs: false,
  mounts: [],
  process: { args: ['/bin/true'], env: ['PATH=/bin'], cwd: '/', user: { uid: 0, gid: 0, additionalGids: [0] } },
  network: 'none',
  hostname: 'kiln',
  security: 'sandbox',
  rlimits: [],
});

const cpuOf = (pid) => {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    // utime stime cutime cstime (fields 14-17), in clock ticks (100/s)
    return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) * 10;
  } catch {
    return 0;
  }
};
const shimPids = () =>
  readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        const c = readFileSync(`/proc/${p}/cmdline`, 'utf8');
        return c.startsWith('/usr/bin/containerd-shim-runc-v2') && c.includes(sock);
      } catch {
        return false;
      }
    });
const med = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : NaN;
};

const client = createContainerdClient({ address: sock, namespace: 'kiln' });
// Per-RPC wall times: wrap the services the executor calls.
const rpcTimes = {};
for (const svc of ['containers', 'tasks']) {
  const real = client[svc];
  client[svc] = new Proxy(real, {
    get(t, k) {
      const f = t[k];
      if (typeof f !== 'function') return f;
      return (...a) => {
        const t0 = performance.now();
        const p = f.apply(t, a);
        if (p && typeof p.then === 'function')
          p.then(
            () => ((rpcTimes[`${svc}.${String(k)}`] ??= []).push(performance.now() - t0)),
            () => undefined,
          );
        return p;
      };
    },
  });
}
const ctrState = path.join(dir, 'ctr-exec');
const shared = new ContainerdExecutor({
  client,
  stateDir: ctrState,
  owner: dir,
  snapshots: {
    taskRootfs: (p) => {
      const o = byPath.get(p);
      return o && { mounts: [{ type: 'overlay', source: 'overlay', target: '', options: o.options }], stubRoot: path.join(o.d, 'upper'), detachHost: async () => undefined };
    },
  },
});
const byPath = new Map();
let mountCpu = 0; // CPU ms of this process's mount/umount spawns for the runc runs (the shim mounts for containerd)
const runc = createRuncExecutor({ stateDir: path.join(dir, 'runc-exec') });

async function ctrdRun() {
  const o = overlay();
  const p = path.join(o.d, 'merged');
  byPath.set(p, o);
  const t0 = performance.now();
  const r = await shared.run(spec(p));
  const ms = performance.now() - t0;
  if (r.exitCode !== 0) throw new Error(`containerd run exit ${r.exitCode}`);
  return ms;
}
async function runcRun() {
  const o = overlay();
  const p = path.join(o.d, 'merged');
  let c0 = cpuOf('self');
  spawnSync('mount', ['-t', 'overlay', 'overlay', '-o', o.options.join(','), p]);
  mountCpu += cpuOf('self') - c0;
  const t0 = performance.now();
  const r = await runc.run(spec(p));
  const ms = performance.now() - t0;
  c0 = cpuOf('self');
  spawnSync('umount', [p]);
  mountCpu += cpuOf('self') - c0;
  if (r.exitCode !== 0) throw new Error(`runc run exit ${r.exitCode}`);
  return ms;
}

// Warm up: the shared shim, runc's binary in the page cache.
await ctrdRun();
await runcRun();
for (const k of Object.keys(rpcTimes)) delete rpcTimes[k];

const res = { ctrd: { wall: [], cpu: [] }, runc: { wall: [], cpu: [] } };
const batch = async (which) => {
  const shims = shimPids();
  const before = { c: cpuOf(ctrd.pid), s: shims.reduce((a, p) => a + cpuOf(p), 0), self: cpuOf('self') };
  const walls = [];
  mountCpu = 0;
  const tracer = process.env.FLOOR_STRACE ? spawn('strace', [...(process.env.FLOOR_STRACE_ARGS ?? '-c').split(' '), '-f', '-o', `${process.env.FLOOR_STRACE}.${which}.${res[which].wall.length}`, ...(which === 'ctrd' ? [ctrd.pid, ...shims] : [process.pid]).flatMap((p) => ['-p', String(p)])], { stdio: 'ignore' }) : undefined;
  if (tracer) await new Promise((r) => setTimeout(r, 1000));
  const t0 = performance.now();
  for (let i = 0; i < N; i++) walls.push(which === 'ctrd' ? await ctrdRun() : await runcRun());
  const total = performance.now() - t0;
  await new Promise((r) => setTimeout(r, 300)); // background container deletes
  if (tracer) {
    tracer.kill('SIGINT');
    await new Promise((r) => tracer.once('exit', r));
  }
  const after = { c: cpuOf(ctrd.pid), s: shimPids().reduce((a, p) => a + cpuOf(p), 0), self: cpuOf('self') };
  const cpu = { containerd: after.c - before.c, shim: after.s - before.s, self: after.self - before.self - mountCpu, mount: mountCpu };
  res[which].wall.push(med(walls));
  res[which].cpu.push(cpu);
  console.log(`${which} x${N}: total ${total.toFixed(0)} ms, median ${med(walls).toFixed(1)} ms/run, cpu ms containerd ${cpu.containerd} shim+runc ${cpu.shim} self(+runc children) ${cpu.self} (+ mount/umount spawns ${cpu.mount}); load ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`);
};
try {
  for (let r = 0; r < ROUNDS; r++) {
    await batch('ctrd');
    await batch('runc');
  }
  console.log('per-RPC median ms (containerd):');
  for (const [k, v] of Object.entries(rpcTimes)) console.log(`  ${k.padEnd(22)} ${med(v).toFixed(2)} (n=${v.length})`);
  const per = (w, k) => med(res[w].cpu.map((c) => c[k])) / N;
  console.log(`median CPU ms per run: containerd path: containerd ${per('ctrd', 'containerd').toFixed(1)} + shim/runc ${per('ctrd', 'shim').toFixed(1)} + client ${per('ctrd', 'self').toFixed(1)}; runc path: runc+client ${per('runc', 'self').toFixed(1)} (+ mount/umount ${per('runc', 'mount').toFixed(1)})`);
  console.log(`median per run: containerd ${med(res.ctrd.wall).toFixed(1)} ms, runc run ${med(res.runc.wall).toFixed(1)} ms`);
} finally {
  await shared.close();
  client.close();
  ctrd.kill('SIGTERM');
  await new Promise((r) => ctrd.once('exit', r));
  for (const p of shimPids()) process.kill(Number(p), 'SIGKILL');
  spawnSync('sh', ['-c', `grep -o " ${dir}/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l`]);
  rmSync(dir, { recursive: true, force: true });
}
