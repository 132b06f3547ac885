import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { silentLogger } from '@kiln/common';
import { removeTestBridge, testNetwork } from '@kiln/testkit';
import { reapDeadOwners } from './host-reap.js';
import { createNetns } from './netns.js';
import { compileNetworkOptions, gatewayOf } from './options.js';
import { ownersDir, processStartTime } from './owner.js';
import { filterResolvConf, resolvConfFor } from './resolv-conf.js';
import { splitRule } from './iptables-sweep.js';
import { NetworkProvider } from './step-network.js';

const canRunCni = process.getuid?.() === 0 && existsSync('/usr/lib/cni/bridge') && existsSync('/usr/sbin/iptables');

describe('network options', () => {
  it('defaults to loopback only, and checks bridge, subnet and plugins naming the key', () => {
    expect(compileNetworkOptions(undefined)).toMatchObject({ mode: 'none', bridge: 'kiln0', subnet: '10.213.0.0/16', gateway: '10.213.0.1' });
    expect(gatewayOf('192.168.7.0/24')).toBe('192.168.7.1');
    expect(() => gatewayOf('10.1.2.3/16')).toThrow(/host bits are set \(did you mean 10\.1\.0\.0\/16\?\)/);
    expect(() => gatewayOf('10.1.0.0')).toThrow(/invalid subnet "10\.1\.0\.0"/);
    expect(() => compileNetworkOptions({ mode: 'none', bridge: 'a-very-long-bridge-name' })).toThrow(expect.objectContaining({ details: { field: 'network.bridge' } }));
    expect(() => compileNetworkOptions({ mode: 'bogus' as never })).toThrow(/unknown network mode "bogus"/);
    expect(() => compileNetworkOptions({ mode: 'cni', cniPluginDir: '/nonexistent' })).toThrow(/bridge, host-local, loopback in \/nonexistent .*containernetworking-plugins/);
  });
});

describe('step resolv.conf', () => {
  it('drops loopback and IPv6 resolvers, keeps search and options, falls back to 8.8.8.8/8.8.4.4 when none is left', () => {
    expect(filterResolvConf('# comment\nnameserver 127.0.0.53\nnameserver ::1\nsearch corp.example\noptions edns0\n')).toBe('search corp.example\noptions edns0\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n');
    expect(filterResolvConf('nameserver 127.1.2.3\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\n')).toBe('nameserver 10.0.0.2\n');
  });

  it('keeps the host file as it is for a host-network step', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'kiln-resolv-'));
    const file = path.join(dir, 'resolv.conf');
    await writeFile(file, 'nameserver 127.0.0.53\nsearch x\n');
    expect(await resolvConfFor({ hostNetwork: true, source: file })).toBe('nameserver 127.0.0.53\nsearch x\n');
    expect(await resolvConfFor({ hostNetwork: false, source: file })).toBe('search x\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n');
    await rm(dir, { recursive: true });
  });

  it('reads iptables -S comments with escaped quotes as one argument', () => {
    expect(splitRule('-A POSTROUTING -s 10.0.0.2/32 -m comment --comment "name: \\"kiln-ab\\" id: \\"kiln-ab-1\\"" -j CNI-f0')).toEqual([
      '-A', 'POSTROUTING', '-s', '10.0.0.2/32', '-m', 'comment', '--comment', 'name: "kiln-ab" id: "kiln-ab-1"', '-j', 'CNI-f0',
    ]);
  });
});

describe.runIf(canRunCni)('CNI step networks (real bridge, host-local, loopback plugins)', () => {
  let root: string;
  /** Host-wide state of its own (as kilnd's /run/kiln-net), shared by the providers of a case like daemons on one host. */
  let hostStateDir: string;
  const net = testNetwork();

  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'kiln-cni-'));
    hostStateDir = path.join(root, 'host');
  });
  afterAll(async () => {
    removeTestBridge(net.bridge);
    await rm(root, { recursive: true, force: true });
  });

  const provider = (poolSize = 0) => new NetworkProvider(compileNetworkOptions({ mode: 'cni', bridge: net.bridge, subnet: net.subnet, poolSize, hostStateDir }), root, silentLogger());

  /** What a step network can leave on the host: namespaces, veths on the bridge (any provider's), IP allocations and NAT rules (this provider's). */
  function leftovers(p: NetworkProvider) {
    const ipamDir = p.allocationsDir;
    const nat = execFileSync('iptables', ['-w', '-t', 'nat', '-S'], { encoding: 'utf8' });
    let veths = '';
    try {
      veths = execFileSync('ip', ['-o', 'link', 'show', 'master', net.bridge], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    } catch {
      // no bridge: no veth either
    }
    return {
      netns: existsSync(p.netnsDir) ? readdirSync(p.netnsDir) : [],
      ips: existsSync(ipamDir) ? readdirSync(ipamDir).filter((f) => /^[0-9.]+$/.test(f) && readFileSync(path.join(ipamDir, f), 'utf8').startsWith(p.containerIdPrefix)) : [],
      rules: nat.split('\n').filter((l) => l.includes(`id: \\"${p.containerIdPrefix}`)),
      veths,
    };
  }

  it('wires each step to the bridge (loopback up, an address in the subnet, default route via the gateway) and 30 steps in a row leave nothing behind', async () => {
    const p = provider();
    await p.reapStale();
    const first = await p.forStep('default');
    expect(first.network).toBe('sandbox');
    const inside = (args: string[]) => execFileSync('nsenter', [`--net=${first.networkNamespace}`, ...args], { encoding: 'utf8' });
    expect(inside(['ip', '-o', '-4', 'addr', 'show', 'eth0'])).toContain(net.subnet.replace('0/24', ''));
    expect(inside(['ip', '-o', 'link', 'show', 'lo'])).toMatch(/UP/);
    expect(inside(['ip', 'route', 'show', 'default'])).toContain(`via ${net.gateway}`);
    expect(leftovers(p).rules.length).toBeGreaterThan(0); // ipMasq set up its rules
    await first.release();

    const setup: number[] = [];
    const teardown: number[] = [];
    for (let i = 0; i < 30; i++) {
      const t0 = performance.now();
      const s = await p.forStep('default');
      const t1 = performance.now();
      await s.release();
      setup.push(t1 - t0);
      teardown.push(performance.now() - t1);
    }
    const mean = (xs: number[]) => Math.round(xs.reduce((a, b) => a + b, 0) / xs.length);
    console.log(`CNI step network: setup ${mean(setup)} ms, teardown ${mean(teardown)} ms (mean of 30)`);
    expect(leftovers(p)).toEqual({ netns: [], ips: [], rules: [], veths: '' });
    await p.close();
    expect(() => execFileSync('ip', ['link', 'show', net.bridge], { stdio: 'ignore' })).toThrow(); // no port left: the bridge went
  });

  it('two daemons (separate state dirs) on one bridge and subnet never hold the same address; one\'s restart sweep and close leave the other\'s steps alone', async () => {
    const other = await mkdtemp(path.join(tmpdir(), 'kiln-cni-other-'));
    const a = provider();
    const b = new NetworkProvider(compileNetworkOptions({ mode: 'cni', bridge: net.bridge, subnet: net.subnet, poolSize: 0, hostStateDir }), other, silentLogger());
    await a.reapStale();
    await b.reapStale();
    const addressOf = (s: { networkNamespace?: string }) => /inet ([0-9.]+)\//.exec(execFileSync('nsenter', [`--net=${s.networkNamespace}`, 'ip', '-o', '-4', 'addr', 'show', 'eth0'], { encoding: 'utf8' }))?.[1];
    // Both hold two addresses at once (as pooled namespaces do from a daemon's first step).
    const ofA = [await a.forStep('default'), await a.forStep('default')];
    const ofB = [await b.forStep('default'), await b.forStep('default')];
    const addresses = [...ofA, ...ofB].map(addressOf);
    expect(new Set(addresses).size, addresses.join(' ')).toBe(4);
    // The host-wide state is root-only.
    for (const d of [hostStateDir, a.ipamDir, a.allocationsDir]) expect(statSync(d).mode & 0o777, d).toBe(0o700);

    // A is killed; its restart reaps its two steps, and only those.
    const restarted = provider();
    await restarted.reapStale();
    expect(leftovers(restarted)).toMatchObject({ netns: [], ips: [], rules: [] });
    const ofBLeft = leftovers(b);
    expect(ofBLeft.netns).toHaveLength(2);
    expect(ofBLeft.ips).toHaveLength(2);
    expect(ofBLeft.rules.length).toBeGreaterThanOrEqual(2);
    expect(ofBLeft.veths.split('\n')).toHaveLength(2);
    // Its close keeps the bridge: B's steps are on it, with their addresses.
    await restarted.close();
    expect(ofB.map(addressOf)).toEqual(addresses.slice(2));
    expect(execFileSync('ip', ['-o', '-4', 'addr', 'show', net.bridge], { encoding: 'utf8' })).toContain(net.gateway);

    for (const s of ofB) await s.release();
    await b.close();
    expect(leftovers(b)).toEqual({ netns: [], ips: [], rules: [], veths: '' });
    expect(existsSync(b.allocationsDir)).toBe(false); // went with the bridge
    await rm(other, { recursive: true, force: true });
  });

  it('a closing daemon does not remove the bridge while another daemon\'s ADD is attaching to it', async () => {
    const a = provider();
    await (await a.forStep('default')).release();
    expect(leftovers(a).veths).toBe(''); // the bridge is there, with nothing on it
    // Another daemon's bridge plugin mid-ADD: it holds the bridge's shared lock, found the bridge, attaches its veth a moment later.
    const lock = path.join(hostStateDir, 'bridges', `${net.bridge}.lock`);
    const held = path.join(root, 'held');
    const veth = `kv${net.bridge.slice(2, 10)}`;
    const other = spawn('flock', ['-s', lock, 'sh', '-c', `touch ${held}; sleep 0.5; ip link add ${veth} type veth peer name ${veth}p && ip link set ${veth} master ${net.bridge}`], { stdio: 'ignore' });
    const attached = new Promise<number | null>((resolve) => other.once('exit', resolve));
    while (!existsSync(held)) await new Promise((r) => setTimeout(r, 20));
    try {
      await a.close();
      expect(await attached).toBe(0);
      expect(execFileSync('ip', ['-o', 'link', 'show', 'master', net.bridge], { encoding: 'utf8' })).toContain(veth);
    } finally {
      await attached;
      execFileSync('ip', ['link', 'delete', veth], { stdio: 'ignore' });
    }
    await a.close(); // now nothing is on it
    expect(() => execFileSync('ip', ['link', 'show', net.bridge], { stdio: 'ignore' })).toThrow();
  });

  it('--network=none and host need no CNI; a killed worker\'s step networks are reaped at the next start', async () => {
    const p = provider();
    expect(await p.forStep('none')).toMatchObject({ network: 'none' });
    expect((await p.forStep('host')).network).toBe('host');
    expect(leftovers(p).netns).toEqual([]);
    // Three steps attached and never released: the daemon "died".
    for (let i = 0; i < 3; i++) await p.forStep('default');
    const before = leftovers(p);
    expect(before.netns).toHaveLength(3);
    expect(before.ips).toHaveLength(3);
    expect(before.rules.length).toBeGreaterThanOrEqual(3);
    expect(before.veths.split('\n')).toHaveLength(3);
    const restarted = provider();
    await restarted.reapStale();
    expect(leftovers(restarted)).toEqual({ netns: [], ips: [], rules: [], veths: '' });
    await restarted.close();
  });

  it("a pool hands a reusable namespace to the next step, tears down the rest, keeps a burst's up to `keep` until it idles, then its size, and empties on close", async () => {
    const IDLE_MS = 1_000;
    const p = new NetworkProvider(compileNetworkOptions({ mode: 'cni', bridge: net.bridge, subnet: net.subnet, poolSize: 2, poolKeep: 4, poolIdleMs: IDLE_MS, hostStateDir }), root, silentLogger());
    await p.reapStale();
    const first = await p.forStep('default');
    await p.settled();
    expect(p.pooled).toBe(1); // filled in the background up to 2 with the one in use
    await first.release({ reusable: true });
    expect(p.pooled).toBe(2);
    const again = await p.forStep('default');
    expect(again.networkNamespace).toBe(first.networkNamespace);
    const inside = execFileSync('nsenter', [`--net=${again.networkNamespace}`, 'ip', '-o', '-4', 'addr', 'show', 'eth0'], { encoding: 'utf8' });
    expect(inside).toContain(net.subnet.replace('0/24', ''));

    // Not reusable (a failed, canceled or insecure step): torn down, and a fresh one takes its place.
    await again.release({ reusable: false });
    await p.settled();
    expect(leftovers(p).netns).not.toContain(path.basename(again.networkNamespace!));
    expect(p.pooled).toBe(2);

    // A burst of 5 parallel steps: 3 are made on demand; afterwards `keep` (4) stay for the next burst,
    // which makes none, and once the pool idled the 2 above its size go in one batch.
    const burst = await Promise.all(Array.from({ length: 5 }, () => p.forStep('default')));
    expect(new Set(burst.map((b) => b.networkNamespace)).size).toBe(5);
    await Promise.all(burst.map((b) => b.release({ reusable: true })));
    await p.settled();
    expect(p.pooled).toBe(4);
    const kept = leftovers(p).netns;
    expect(kept).toHaveLength(4);
    const next = await Promise.all(Array.from({ length: 4 }, () => p.forStep('default')));
    expect(new Set(next.map((b) => path.basename(b.networkNamespace!)))).toEqual(new Set(kept));
    await Promise.all(next.map((b) => b.release({ reusable: true })));
    expect(p.pooled).toBe(4);
    await new Promise((r) => setTimeout(r, IDLE_MS + 200));
    await p.settled();
    expect(p.pooled).toBe(2);
    const left = leftovers(p);
    expect(left.netns).toHaveLength(2);
    expect(left.ips).toHaveLength(2);
    expect(new Set(left.rules.map((r) => /id: \\"([^\\]+)/.exec(r)![1]))).toHaveProperty('size', 2);
    // The kernel deletes a dropped namespace's veth pair once the namespace is freed, a moment later.
    for (let i = 0; i < 50 && leftovers(p).veths.split('\n').length > 2; i++) await new Promise((r) => setTimeout(r, 100));
    expect(leftovers(p).veths.split('\n')).toHaveLength(2);

    // A killed worker's pooled namespaces are reaped like in-use ones.
    const restarted = provider(2);
    await restarted.reapStale();
    expect(leftovers(restarted)).toEqual({ netns: [], ips: [], rules: [], veths: '' });
    await restarted.close();

    // close tears the pool down.
    const q = provider(2);
    await (await q.forStep('default')).release({ reusable: true });
    await q.settled();
    expect(leftovers(q).netns).toHaveLength(2);
    await q.close();
    expect(leftovers(q)).toEqual({ netns: [], ips: [], rules: [], veths: '' });
  });
  it("a dead daemon's step networks (owner record: pid + start time) are reaped host-wide by another daemon's start; a live one's stay; pins are handled by their real path only", async () => {
    const dirOf = async (name: string) => mkdtemp(path.join(tmpdir(), `kiln-cni-${name}-`));
    const [deadDir, liveDir, nextDir] = [await dirOf('dead'), await dirOf('live'), await dirOf('next')];
    const at = (dir: string) => new NetworkProvider(compileNetworkOptions({ mode: 'cni', bridge: net.bridge, subnet: net.subnet, poolSize: 0, hostStateDir }), dir, silentLogger());
    const dead = at(deadDir);
    const live = at(liveDir);
    for (const s of [await dead.forStep('default'), await dead.forStep('default'), await live.forStep('default')]) expect(s.networkNamespace).toBeDefined();
    // The owner of `dead` is a process that exited (same pid namespace): rewrite its record.
    const gone = spawnSync('true').pid!;
    expect(processStartTime(gone)).toBeUndefined();
    const record = path.join(ownersDir(hostStateDir), `${dead.ownerPrefix.slice(0, -1)}.json`);
    const owner = JSON.parse(readFileSync(record, 'utf8')) as Record<string, unknown>;
    expect(owner).toMatchObject({ pid: process.pid, startTime: processStartTime(process.pid), pidNamespace: readlinkSync('/proc/self/ns/pid') });
    writeFileSync(record, JSON.stringify({ ...owner, pid: gone }));
    // A pin from before owner records whose state dir is gone (only its mount point is left), reached today through a renamed parent
    // with a symlink at the old name that leads to a decoy pin file of the same name: the decoy stays.
    const legacyId = 'kiln-0badc0de-0123456789ab';
    const oldRoot = path.join(root, 'legacy-old');
    mkdirSync(path.join(oldRoot, 'net', 'netns'), { recursive: true });
    await createNetns(path.join(oldRoot, 'net', 'netns', legacyId));
    renameSync(oldRoot, path.join(root, 'legacy-moved'));
    const decoy = path.join(root, 'decoy');
    mkdirSync(path.join(decoy, 'net', 'netns'), { recursive: true });
    writeFileSync(path.join(decoy, 'net', 'netns', legacyId), '');
    symlinkSync(decoy, oldRoot);
    // A pin of the same form whose step record is there: a live daemon from before owner records; it stays.
    const keptId = 'kiln-0badc0de-ba9876543210';
    const keptRoot = path.join(root, 'legacy-live');
    mkdirSync(path.join(keptRoot, 'net', 'netns'), { recursive: true });
    mkdirSync(path.join(keptRoot, 'net', 'steps'));
    writeFileSync(path.join(keptRoot, 'net', 'steps', `${keptId}.json`), '{}');
    await createNetns(path.join(keptRoot, 'net', 'netns', keptId));
    // NAT rules of that era: one whose namespace and address are gone (its pin was unmounted by hand) goes; the live one's stays.
    const orphanId = 'kiln-0badc0de-0000feedf00d';
    const natRule = (id: string, n: number) => {
      const chain = `CNI-${id.slice(-12)}`;
      execFileSync('iptables', ['-w', '-t', 'nat', '-N', chain]);
      execFileSync('iptables', ['-w', '-t', 'nat', '-A', chain, '-d', net.subnet, '-m', 'comment', '--comment', `name: "kiln-test" id: "${id}"`, '-j', 'ACCEPT']);
      execFileSync('iptables', ['-w', '-t', 'nat', '-A', 'POSTROUTING', '-s', `${net.subnet.replace('0/24', String(200 + n))}/32`, '-m', 'comment', '--comment', `name: "kiln-test" id: "${id}"`, '-j', chain]);
    };
    natRule(orphanId, 1);
    natRule(keptId, 2);
    const natOf = (id: string) => execFileSync('iptables', ['-w', '-t', 'nat', '-S'], { encoding: 'utf8' }).split('\n').filter((l) => l.includes(id));

    const pins = () => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(' - nsfs ')).map((l) => l.split(' ')[4]!);
    const before = { dead: leftovers(dead), live: leftovers(live) };
    expect(before.dead.netns).toHaveLength(2);
    expect(before.dead.ips).toHaveLength(2);
    expect(before.live.ips).toHaveLength(1);
    expect(before.dead.veths.split('\n')).toHaveLength(3);

    const next = at(nextDir);
    await next.reapStale();
    expect(leftovers(dead)).toMatchObject({ netns: [], ips: [], rules: [] });
    expect(pins().filter((p) => p.startsWith(`${deadDir}/`) || p.includes('legacy-moved'))).toEqual([]);
    expect(existsSync(path.join(root, 'legacy-moved', 'net', 'netns', legacyId))).toBe(false); // unmounted and removed at its real path
    expect(existsSync(path.join(decoy, 'net', 'netns', legacyId))).toBe(true); // never through the symlink
    expect(pins()).toContain(path.join(keptRoot, 'net', 'netns', keptId));
    expect(natOf(orphanId)).toEqual([]);
    expect(natOf(keptId)).toHaveLength(2); // its chain's rule and the jump
    expect(existsSync(record)).toBe(false);
    const after = leftovers(live);
    expect(after.netns).toEqual(before.live.netns);
    expect(after.ips).toEqual(before.live.ips);
    expect(after.rules).toEqual(before.live.rules);
    expect(after.veths.split('\n')).toHaveLength(1);

    execFileSync('umount', [path.join(keptRoot, 'net', 'netns', keptId)]);
    await next.reapStale(); // now its rules name no namespace: swept too
    expect(natOf(keptId)).toEqual([]);
    await live.reapStale();
    await live.close();
    await next.close();
    for (const d of [deadDir, liveDir, nextDir]) await rm(d, { recursive: true, force: true });
  });
});
