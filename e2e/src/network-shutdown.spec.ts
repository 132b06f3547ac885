import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeTestBridge, runKiln, startKilnd, testNetwork, type Kilnd } from '@kiln/testkit';

/**
 * A daemon stopped as the shared diffsuite harness stops it (SIGTERM, then
 * SIGKILL 300 ms later) and whose root is then removed: no later daemon
 * restarts on that root, so whatever its step networks held (pinned nsfs
 * mounts, veths on the bridge, host-wide IPAM allocations, NAT rules)
 * stayed on the host for good. The bridge and subnet are this spec's own;
 * the IPAM store is kilnd's host-wide one (/run/kiln-net), as in CI.
 */
const POOL = 4;
const worker = 'oci';

describe(`step networks of a daemon stopped by SIGTERM + SIGKILL or killed, its root removed [topology=all-in-one, worker=${worker}]`, () => {
  const net = testNetwork();
  let dir: string;
  let ctx: string;
  /** A build without RUN: it makes no namespace, and its first op waits for the worker's start-up reaping. */
  let copyOnly: string;
  let args: string[];
  const started: Kilnd[] = [];

  const ipamDir = () => join('/run/kiln-net/ipam', `kiln-${net.bridge}-${net.subnet.replace('/', '-')}`);
  const netnsDir = (root: string) => join(root, `worker-${worker}`, 'exec', 'net', 'netns');

  /** The pooled namespaces (container ids) a daemon on `root` holds now. */
  const namespaces = (root: string) => (existsSync(netnsDir(root)) ? readdirSync(netnsDir(root)) : []);

  /** What the step networks of container ids `ids` (under `root`) hold on the host. */
  function held(root: string, ids: string[]) {
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .filter((l) => l.includes(' - nsfs '))
      .map((l) => l.split(' ')[4]!)
      .filter((m) => m.startsWith(`${root}/`));
    const ips = existsSync(ipamDir())
      ? readdirSync(ipamDir()).filter((f) => /^[0-9.]+$/.test(f) && ids.some((id) => readFileSync(join(ipamDir(), f), 'utf8').startsWith(id)))
      : [];
    const rules = execFileSync('iptables', ['-w', '-t', 'nat', '-S'], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => ids.some((id) => l.includes(`id: \\"${id}\\"`)));
    return { mounts, ips, rules };
  }

  /** The veths on this spec's bridge (every daemon here uses it). */
  function veths(): number {
    const r = spawnSync('ip', ['-o', 'link', 'show', 'master', net.bridge], { encoding: 'utf8' });
    return r.status === 0 ? r.stdout.split('\n').filter(Boolean).length : 0;
  }

  /** Waits (up to `ms`) until `check` holds; the kernel frees a namespace's veth asynchronously once its last reference went. */
  async function eventually(check: () => boolean, ms = 5_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!check() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  }

  async function daemon(name: string): Promise<Kilnd> {
    const d = await startKilnd({ worker, root: join(dir, name), args });
    started.push(d);
    return d;
  }

  /** A build with a RUN on the default network: the pool fills up to POOL afterwards. */
  async function buildWithRun(d: Kilnd): Promise<string[]> {
    const res = await runKiln(['build', '--addr', d.addr, '--progress=plain', '--no-cache', ctx]);
    expect(res.code, `${res.stderr}\n${d.logs().slice(-3000)}`).toBe(0);
    // Filled: POOL namespaces made and wired (the pin file exists a moment before its mount and ADD).
    await eventually(() => d.logs().split('step network attached').length - 1 >= POOL, 15_000);
    const ids = namespaces(d.root);
    expect(ids.length).toBeGreaterThanOrEqual(POOL);
    return ids;
  }

  /** The harness's stop: SIGTERM, SIGKILL `graceMs` later (none: SIGKILL at once); then the root is removed (`rm -rf`, which cannot remove mount points). */
  async function stopAsHarness(d: Kilnd, graceMs: number | undefined): Promise<void> {
    const pid = Number(readFileSync(join(d.root, 'kilnd.pid'), 'utf8'));
    if (graceMs !== undefined) {
      process.kill(pid, 'SIGTERM');
      await new Promise((r) => setTimeout(r, graceMs));
    }
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
    await d.kill(); // waits for the exit
    spawnSync('rm', ['-rf', d.root]);
  }

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'kiln-netstop-'));
    ctx = join(dir, 'ctx');
    mkdirSync(ctx);
    copyFileSync('/bin/busybox', join(ctx, 'busybox'));
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM scratch\nCOPY --chmod=0755 busybox /bin/busybox\nRUN ["/bin/busybox", "true"]\n');
    copyOnly = join(dir, 'copy-only');
    mkdirSync(copyOnly);
    writeFileSync(join(copyOnly, 'Dockerfile'), 'FROM scratch\nCOPY Dockerfile /x\n');
    writeFileSync(join(dir, 'kilnd.toml'), `[worker.network]\npool-size = ${POOL}\n`);
    args = ['--config', join(dir, 'kilnd.toml'), ...net.args];
  });

  afterAll(async () => {
    for (const d of started) await d.stop();
    removeTestBridge(net.bridge);
    for (const m of readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').filter((p) => p.startsWith(`${dir}/`)).reverse()) {
      spawnSync('umount', ['-l', m]);
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('SIGTERM then SIGKILL 300 ms later: the pooled namespaces, their veths, IPs and NAT rules are gone (and the next daemon on another root finds nothing of it)', async () => {
    const first = await daemon('a');
    const ids = await buildWithRun(first);
    expect(held(first.root, ids).mounts).toHaveLength(ids.length);
    expect(veths()).toBe(ids.length);
    const t0 = performance.now();
    await stopAsHarness(first, 300);
    console.log(`SIGTERM + SIGKILL after 300 ms: ${ids.length} pooled namespaces, exited after ${Math.round(performance.now() - t0)} ms`);
    // SIGTERM released the pool first: pins and addresses went in milliseconds, before the SIGKILL; the veths go with the namespaces.
    // (Its NAT rules go in one iptables batch right after: a SIGKILL in the middle of that leaves them to the next start's reaping.)
    const left = held(first.root, ids);
    expect({ mounts: left.mounts, ips: left.ips }).toEqual({ mounts: [], ips: [] });
    await eventually(() => veths() === 0);
    expect(veths()).toBe(0);

    const next = await daemon('b');
    const res = await runKiln(['build', '--addr', next.addr, '--progress=plain', copyOnly]);
    expect(res.code, res.stderr).toBe(0);
    expect(held(first.root, ids)).toEqual({ mounts: [], ips: [], rules: [] });
    await next.stop();
    expect(veths()).toBe(0);
  }, 120_000);

  it("a daemon killed outright, its root removed: the next daemon's start reaps its namespaces, veths, IPs and NAT rules host-wide, and leaves a live daemon's pool alone", async () => {
    const live = await daemon('live');
    const liveIds = await buildWithRun(live);
    const killed = await daemon('killed');
    const killedIds = await buildWithRun(killed);
    await stopAsHarness(killed, undefined);
    // The kill left them, under a root that is gone otherwise.
    expect(held(killed.root, killedIds).mounts).toHaveLength(killedIds.length);
    expect(held(killed.root, killedIds).ips).toHaveLength(killedIds.length);
    expect(veths()).toBe(liveIds.length + killedIds.length);

    // The next daemon (another root, same bridge) reaps at start: its first op waits for that. No RUN: it makes no namespace itself.
    const next = await daemon('next');
    const res = await runKiln(['build', '--addr', next.addr, '--progress=plain', copyOnly]);
    expect(res.code, `${res.stderr}\n${next.logs().slice(-3000)}`).toBe(0);
    expect(held(killed.root, killedIds)).toEqual({ mounts: [], ips: [], rules: [] });
    await eventually(() => veths() === liveIds.length);
    expect(veths()).toBe(liveIds.length);
    // The live daemon's pool is as it was, and still builds on it.
    expect(namespaces(live.root).sort()).toEqual([...liveIds].sort());
    const liveHeld = held(live.root, liveIds);
    expect(liveHeld.mounts).toHaveLength(liveIds.length);
    expect(liveHeld.ips).toHaveLength(liveIds.length);
    expect(liveHeld.rules.length).toBeGreaterThanOrEqual(liveIds.length);
    const again = await runKiln(['build', '--addr', live.addr, '--progress=plain', '--no-cache', ctx]);
    expect(again.code, again.stderr).toBe(0);
    await next.stop();
    await live.stop();
    expect(held(live.root, liveIds)).toEqual({ mounts: [], ips: [], rules: [] });
  }, 180_000);
});
