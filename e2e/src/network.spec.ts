import { execFileSync, spawn } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kilnBin, removeTestBridge, runKiln, startKilnd, testNetwork, type Kilnd } from '@kiln/testkit';

/**
 * RUN steps on the default network (CNI: a namespace per step on a bridge
 * of this test's own, with its own subnet). Traffic goes only to servers
 * this test starts on the bridge's gateway address: an HTTP server and a
 * DNS resolver the steps' resolv.conf points to (the daemon's
 * `[worker.network] resolv-conf` names a file this test writes).
 */

/** The pid of the daemon serving `root` (its command line names the root). */
function daemonPid(root: string): number {
  for (const entry of readdirSync('/proc').filter((e) => /^\d+$/.test(e))) {
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv.includes('daemon') && argv.includes(root)) return Number(entry);
    } catch {
      // gone
    }
  }
  throw new Error(`no daemon for ${root}`);
}

/** Whether a process runs with exactly this command line (the step of the crash case). */
function running(argv: string[]): boolean {
  for (const entry of readdirSync('/proc').filter((e) => /^\d+$/.test(e))) {
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8') === `${argv.join('\0')}\0`) return true;
    } catch {
      // gone
    }
  }
  return false;
}

/** A DNS server answering A queries for `name` with `ip` and NXDOMAIN for anything else; records the names asked. */
function startDns(host: string, name: string, ip: string): Promise<{ socket: Socket; asked: string[] }> {
  const asked: string[] = [];
  const socket = createSocket('udp4');
  socket.on('message', (msg, rinfo) => {
    // Header (12 bytes), then one question: labels, type, class.
    let off = 12;
    const labels: string[] = [];
    while (msg[off]! > 0) {
      labels.push(msg.subarray(off + 1, off + 1 + msg[off]!).toString());
      off += msg[off]! + 1;
    }
    const qname = labels.join('.');
    const qtype = msg.readUInt16BE(off + 1);
    const question = msg.subarray(12, off + 5);
    asked.push(qname);
    const known = qname === name;
    const answer = known && qtype === 1 ? Buffer.concat([Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]), Buffer.from(ip.split('.').map(Number))]) : Buffer.alloc(0);
    const header = Buffer.alloc(12);
    msg.copy(header, 0, 0, 2); // id
    header.writeUInt16BE(0x8180 | (known ? 0 : 3), 2); // response, recursion available; NXDOMAIN when unknown
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(answer.length > 0 ? 1 : 0, 6);
    socket.send(Buffer.concat([header, question, answer]), rinfo.port, rinfo.address);
  });
  return new Promise((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(53, host, () => resolve({ socket, asked }));
  });
}

describe.each(['oci', 'containerd'] as const)('RUN networking like BuildKit (CNI bridge per daemon) [topology=all-in-one, worker=%s]', (worker) => {
  const net = testNetwork();
  let dir: string;
  let root: string;
  let daemon: Kilnd;
  let http: Server;
  let port = 0;
  let dns: { socket: Socket; asked: string[] };
  let args: string[];

  /** What step networks can leave behind: pinned namespaces, veths on the bridge, IP allocations, NAT rules for the subnet. */
  function leftovers() {
    const netDir = join(root, `worker-${worker}`, 'exec', 'net');
    // host-local's allocations of this bridge + subnet, host-wide (every daemon on the bridge shares them; this test's bridge is its own).
    const ipamDirs = [join('/run/kiln-net/ipam', `kiln-${net.bridge}-${net.subnet.replace('/', '-')}`)].filter((d) => existsSync(d));
    let veths = '';
    try {
      veths = execFileSync('ip', ['-o', 'link', 'show', 'master', net.bridge], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    } catch {
      // no bridge: no veth
    }
    return {
      netns: existsSync(join(netDir, 'netns')) ? readdirSync(join(netDir, 'netns')) : [],
      ips: ipamDirs.flatMap((d) => readdirSync(d).filter((f) => /^[0-9.]+$/.test(f))),
      rules: execFileSync('iptables', ['-w', '-t', 'nat', '-S'], { encoding: 'utf8' }).split('\n').filter((l) => l.includes(`-s ${net.subnet.replace('0/24', '')}`)),
      veths,
    };
  }

  /** Ready namespaces the daemon keeps (`[worker.network] pool-size`). */
  const POOL = 2;

  /** Nothing is left but the pool's ready namespaces: at most POOL, each with exactly its IP, veth and NAT jump. */
  function expectOnlyPool(l = leftovers()) {
    expect(l.netns.length).toBeLessThanOrEqual(POOL);
    expect(l.ips).toHaveLength(l.netns.length);
    expect(l.rules).toHaveLength(l.netns.length);
    expect(l.veths === '' ? 0 : l.veths.split('\n').length).toBe(l.netns.length);
  }

  const attaches = () => daemon.logs().split('step network attached').length - 1;

  const build = (ctx: string, extra: string[] = []) => runKiln(['build', '--addr', daemon.addr, '--progress=plain', ...extra, '-o', `type=local,dest=${join(ctx, 'out')}`, ctx]);

  function context(name: string, steps: string[]): string {
    const ctx = join(dir, name);
    execFileSync('mkdir', ['-p', ctx]);
    copyFileSync('/bin/busybox', join(ctx, 'busybox'));
    writeFileSync(join(ctx, 'Dockerfile'), ['FROM scratch', 'COPY --chmod=0755 busybox /bin/busybox', 'RUN ["/bin/busybox", "--install", "-s", "/bin"]', ...steps, ''].join('\n'));
    return ctx;
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kiln-net-'));
    root = join(dir, 'root');
    // The bridge up front, so the servers can listen on its address before any step attached (the bridge plugin adopts it).
    execFileSync('ip', ['link', 'add', net.bridge, 'type', 'bridge']);
    execFileSync('ip', ['addr', 'add', `${net.gateway}/24`, 'dev', net.bridge]);
    execFileSync('ip', ['link', 'set', net.bridge, 'up']);
    http = createServer((req, res) => {
      if (req.url === '/file.txt') res.end('fetched over the step network\n');
      else res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => http.listen(0, net.gateway, resolve));
    port = (http.address() as { port: number }).port;
    dns = await startDns(net.gateway, 'files.kiln.test', net.gateway);
    // The steps' resolver: this test's DNS server (a loopback line shows the filtering).
    writeFileSync(join(dir, 'resolv.conf'), `nameserver 127.0.0.53\nnameserver ${net.gateway}\nsearch kiln.test\n`);
    writeFileSync(join(dir, 'kilnd.toml'), `[worker.network]\nresolv-conf = "${join(dir, 'resolv.conf')}"\npool-size = ${POOL}\n`);
    args = ['--config', join(dir, 'kilnd.toml'), '--allow-insecure-entitlement', 'network.host', ...net.args];
    daemon = await startKilnd({ worker, root, args });
  }, 60_000);

  afterAll(async () => {
    await daemon?.stop();
    http?.close();
    dns?.socket.close();
    removeTestBridge(net.bridge);
    for (const m of readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').filter((p) => p.startsWith(`${dir}/`)).reverse()) {
      execFileSync('umount', ['-l', m]);
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('a RUN step fetches a file from a server on the bridge and resolves a name through the resolver of its resolv.conf; --network=none cannot', async () => {
    const ctx = context('fetch', [
      `RUN wget -q -O /fetched.txt http://${net.gateway}:${port}/file.txt && cp /etc/resolv.conf /resolv.txt`,
      'RUN nslookup files.kiln.test > /dns.txt',
      `RUN --network=none sh -c 'ls /sys/class/net > /none-net.txt; if wget -q -T 3 -O /x http://${net.gateway}:${port}/file.txt; then echo reached; else echo unreachable; fi > /none.txt'`,
    ]);
    const res = await build(ctx);
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
    const out = (f: string) => readFileSync(join(ctx, 'out', f), 'utf8');
    expect(out('fetched.txt')).toBe('fetched over the step network\n');
    // Loopback resolvers dropped (they answer only on the host), the rest kept.
    expect(out('resolv.txt')).toBe(`nameserver ${net.gateway}\nsearch kiln.test\n`);
    expect(out('dns.txt')).toMatch(new RegExp(`Name:\\s+files\\.kiln\\.test\\nAddress:\\s+${net.gateway.replace(/\./g, '\\.')}\\n`));
    expect(dns.asked).toContain('files.kiln.test');
    expect(out('none.txt')).toBe('unreachable\n');
    expect(out('none-net.txt').trim()).toBe('lo');
    expectOnlyPool();
  }, 60_000);

  it('--add-host NAME=host-gateway maps NAME to the bridge gateway on the step network (the step reaches the host by it) and to a host address in the host network', async () => {
    const ctx = context('host-gateway', [
      `RUN wget -q -O /via-gw.txt http://gw.kiln:${port}/file.txt && grep gw.kiln /etc/hosts > /hosts.txt`,
      'RUN --network=host grep gw.kiln /etc/hosts > /host-hosts.txt',
    ]);
    const res = await build(ctx, ['--add-host', 'gw.kiln=host-gateway', '--allow', 'network.host']);
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
    const out = (f: string) => readFileSync(join(ctx, 'out', f), 'utf8');
    expect(out('hosts.txt')).toBe(`${net.gateway}\tgw.kiln\n`);
    expect(out('via-gw.txt')).toBe('fetched over the step network\n');
    const hostIps = Object.values(networkInterfaces()).flatMap((a) => a ?? []).filter((a) => a.family === 'IPv4' && !a.internal).map((a) => a.address);
    const [ip, name] = out('host-hosts.txt').trim().split('\t');
    expect(name).toBe('gw.kiln');
    expect(hostIps).toContain(ip);
  }, 60_000);

  it('20 RUN steps in a row reuse the pooled namespaces and leave nothing but the pool behind', async () => {
    // Each step prints its address: a reused namespace keeps the one CNI gave it.
    const steps = Array.from({ length: 20 }, (_, i) => `RUN echo ${i} $(ip -o -4 addr show eth0 | wc -l) >> /steps.txt`);
    const ctx = context('leak', steps);
    const before = attaches();
    const t0 = performance.now();
    const res = await build(ctx);
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
    console.log(`20 RUN steps on the CNI network: ${Math.round(performance.now() - t0)} ms`);
    expect(readFileSync(join(ctx, 'out', 'steps.txt'), 'utf8').split('\n').filter(Boolean)).toEqual(Array.from({ length: 20 }, (_, i) => `${i} 1`));
    // The pool was filled by the first test's steps: no step here waited for a new namespace.
    expect(attaches() - before).toBeLessThanOrEqual(POOL);
    expectOnlyPool();
  }, 120_000);

  // The bridge and IP pool are shared by both worker kinds' code: registered once, on oci.
  if (worker === 'oci') it("a second daemon on the same bridge and subnet gets other addresses, and its stop leaves the first one's steps alone", async () => {
    /** The addresses of the wired namespaces a daemon on `r` holds (its pool). */
    const addresses = (r: string) => {
      const netnsDir = join(r, `worker-${worker}`, 'exec', 'net', 'netns');
      return (existsSync(netnsDir) ? readdirSync(netnsDir) : []).flatMap((n) => {
        const out = execFileSync('nsenter', [`--net=${join(netnsDir, n)}`, 'ip', '-o', '-4', 'addr', 'show'], { encoding: 'utf8' });
        return [...out.matchAll(/inet (10\.[0-9.]+)\//g)].map((m) => m[1]!);
      });
    };
    const root2 = join(dir, 'root2');
    const second = await startKilnd({ worker, root: root2, args });
    try {
      const ctx = context('second', [`RUN wget -q -O /fetched.txt http://${net.gateway}:${port}/file.txt`]);
      const res = await runKiln(['build', '--addr', second.addr, '--progress=plain', '-o', `type=local,dest=${join(ctx, 'out')}`, ctx]);
      expect(res.code, `${res.stderr}\n${second.logs().slice(-4000)}`).toBe(0);
      expect(readFileSync(join(ctx, 'out', 'fetched.txt'), 'utf8')).toBe('fetched over the step network\n');
      const first = addresses(root);
      const other = addresses(root2);
      expect(first.length).toBeGreaterThan(0);
      expect(other.length).toBeGreaterThan(0);
      expect(new Set([...first, ...other]).size, `${first.join(' ')} / ${other.join(' ')}`).toBe(first.length + other.length);
    } finally {
      await second.stop();
    }
    // The second daemon's stop tore its pool down and kept the bridge: the first daemon's pool is as it was.
    expect(addresses(root2)).toEqual([]);
    expectOnlyPool();
    expect(leftovers().netns.length).toBeGreaterThan(0);
  }, 60_000);

  it("a killed daemon's step networks are reaped when it restarts", async () => {
    const ctx = context('killed', ['RUN ["/bin/busybox", "sh", "-c", "echo x > /x; exec /bin/busybox sleep 30"]']);
    const client = spawn(kilnBin(), ['build', '--addr', daemon.addr, '--progress=plain', ctx], { stdio: 'ignore' });
    // The long sleep step runs in a pooled (wired) namespace.
    for (let i = 0; i < 600 && !running(['/bin/busybox', 'sleep', '30']); i++) await new Promise((r) => setTimeout(r, 100));
    const during = leftovers();
    expect(during.netns.length).toBeGreaterThanOrEqual(1);
    expect(during.ips).toHaveLength(during.netns.length);
    expect(during.rules).toHaveLength(during.netns.length);
    const pid = daemonPid(root);
    process.kill(pid, 'SIGKILL');
    client.kill('SIGKILL');
    for (let i = 0; i < 100 && existsSync(`/proc/${pid}`); i++) await new Promise((r) => setTimeout(r, 50));
    rmSync(join(root, 'kiln.sock'), { force: true });
    expect(leftovers().netns).toEqual(during.netns); // the crash left them

    daemon = await startKilnd({ worker, root, args });
    // The restart reaps before it runs anything: a build proves reaping is done.
    const next = await build(context('after', ['RUN true']));
    expect(next.code, next.stderr).toBe(0);
    const after = leftovers();
    expectOnlyPool(after);
    expect(after.netns.filter((n) => during.netns.includes(n))).toEqual([]); // the crashed ones went, pooled or not
    // A daemon that stops tears its pool down.
    await daemon.stop();
    expect(leftovers()).toEqual({ netns: [], ips: [], rules: [], veths: '' });
  }, 120_000);
});
