import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, kilnBin, makeClusterCerts, runKiln, startKilnd, type ClusterCerts, type Kilnd } from '@kiln/testkit';

const canConnect = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });

describe('kiln builder create|use|ls|inspect|rm|stop and --builder [topology=all-in-one]', () => {
  let work: string;
  let config: string;
  let unixDaemon: Kilnd;
  let tlsDaemon: ChildProcess | undefined;
  let tlsPort: number;
  let certs: ClusterCerts;
  let ctx: string;
  // Every call: a private builder store, and a KILN_ROOT where no daemon runs (the "default" builder is down).
  const kiln = (args: string[]) => runKiln(args, { env: { KILN_CONFIG: config, KILN_ROOT: join(work, 'no-default'), KILN_ADDR: '', KILN_BUILDER: '' } });

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'kiln-builders-'));
    config = join(work, 'config');
    ctx = join(work, 'ctx');
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM scratch\nCOPY a.txt /a.txt\n');
    writeFileSync(join(ctx, 'a.txt'), 'a\n');
    unixDaemon = await startKilnd();
    certs = await makeClusterCerts(join(work, 'certs'));
    tlsPort = await freePort();
    const root = join(work, 'tls-root');
    tlsDaemon = spawn(kilnBin(), ['daemon', '--root', root, '--addr', `tcp://127.0.0.1:${tlsPort}`, ...certs.args('solver')], { stdio: 'ignore' });
    for (let i = 0; i < 300 && !(await canConnect(tlsPort)); i++) await new Promise((r) => setTimeout(r, 100));
  }, 90_000);
  afterAll(async () => {
    if (tlsDaemon && tlsDaemon.exitCode === null) {
      const exited = new Promise((r) => tlsDaemon!.once('exit', r));
      tlsDaemon.kill('SIGTERM');
      await exited;
    }
    await unixDaemon?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('a remote builder over mTLS: create --use, then build, du and version go there without --addr; ls and inspect show it', async () => {
    const f = certs.files('client');
    const created = await kiln(['builder', 'create', '--name', 'tls', '--driver', 'remote', '--driver-opt', `cacert=${f.caCert},cert=${f.cert}`, '--driver-opt', `key=${f.key}`, '--use', `tcp://127.0.0.1:${tlsPort}`]);
    expect(created.code, created.stderr).toBe(0);
    expect(created.stdout).toBe('tls\n');
    const stored = JSON.parse(readFileSync(join(config, 'builders', 'tls.json'), 'utf8')) as { driver: string; endpoint: string; driverOpts: Record<string, string> };
    expect(stored).toMatchObject({ driver: 'remote', endpoint: `tcp://127.0.0.1:${tlsPort}`, driverOpts: { cacert: f.caCert, cert: f.cert, key: f.key } });
    expect(readFileSync(join(config, 'builders', 'current'), 'utf8').trim()).toBe('tls');

    const meta = join(work, 'meta.json');
    const build = await kiln(['build', '--progress=plain', '-o', `type=local,dest=${join(work, 'out')}`, '--metadata-file', meta, ctx]);
    expect(build.code, build.stderr).toBe(0);
    expect(readFileSync(join(work, 'out', 'a.txt'), 'utf8')).toBe('a\n');
    expect((JSON.parse(readFileSync(meta, 'utf8')) as Record<string, string>)['buildx.build.ref']).toMatch(/^tls\/tls0\/[0-9a-z]{25}$/);
    const version = await kiln(['version']);
    expect(version.stdout).toContain(`Address:  tcp://127.0.0.1:${tlsPort}`);

    const ls = await kiln(['builder', 'ls']);
    expect(ls.code, ls.stderr).toBe(0);
    expect(ls.stdout).toMatch(/^NAME\/NODE\s+DRIVER\/ENDPOINT\s+STATUS/);
    expect(ls.stdout).toMatch(/^default\s+local\s*\n \\_ default\s+\\_ unix:\/\/.*no-default\/kiln\.sock\s+inactive/m);
    expect(ls.stdout).toMatch(new RegExp(`^tls \\*\\s+remote\\s*\\n \\\\_ tls0\\s+\\\\_ tcp://127\\.0\\.0\\.1:${tlsPort}\\s+running\\s+\\S+\\s+linux/`, 'm'));

    const inspect = await kiln(['builder', 'inspect']);
    expect(inspect.stdout).toMatch(/^Name:\s+tls\nDriver:\s+remote\n/);
    expect(inspect.stdout).toMatch(/Status:\s+running/);
    expect(inspect.stdout).toMatch(/Platforms:\s+linux\//);

    // --builder on any command picks another one; a name that does not exist is an error naming it.
    await kiln(['builder', 'create', '--name', 'sock', '--driver', 'remote', unixDaemon.addr]);
    const du = await kiln(['du', '--builder', 'sock']);
    expect(du.code, du.stderr).toBe(0);
    const missing = await kiln(['du', '--builder', 'nope']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('no builder "nope" found');

    // Without the driver's certificates the same endpoint refuses the CLI.
    await kiln(['builder', 'create', '--name', 'plain', '--driver', 'remote', `tcp://127.0.0.1:${tlsPort}`]);
    const plain = await kiln(['du', '--builder', 'plain']);
    expect(plain.code).toBe(1);
    expect(plain.stderr).toContain('give --tlscacert, --tlscert and --tlskey');

    expect((await kiln(['builder', 'use', 'default'])).code).toBe(0);
    expect(existsSync(join(config, 'builders', 'current'))).toBe(false);
    const rm = await kiln(['builder', 'rm', 'tls', 'sock', 'plain']);
    expect(rm.code, rm.stderr).toBe(0);
    expect((await kiln(['builder', 'ls'])).stdout).not.toContain('tls');
    const rmDefault = await kiln(['builder', 'rm', 'default']);
    expect(rmDefault.code).toBe(1);
    expect(rmDefault.stderr).toContain('default builder cannot be removed');
  });

  it('a local builder: --bootstrap starts its daemon in its root, stop ends it', async () => {
    const root = join(work, 'local-root');
    const created = await kiln(['builder', 'create', '--name', 'loc', '--driver', 'local', '--driver-opt', `root=${root}`, '--bootstrap']);
    expect(created.code, created.stderr).toBe(0);
    const pid = Number(readFileSync(join(root, 'kilnd.pid'), 'utf8'));
    expect(pid).toBeGreaterThan(1);
    const inspect = await kiln(['builder', 'inspect', 'loc']);
    expect(inspect.stdout).toMatch(/Status:\s+running/);
    expect(inspect.stdout).toContain(`Endpoint:          unix://${root}/kiln.sock`);
    const stop = await kiln(['builder', 'stop', 'loc']);
    expect(stop.code, stop.stderr).toBe(0);
    expect(() => process.kill(pid, 0)).toThrow();
    expect((await kiln(['builder', 'inspect', 'loc'])).stdout).toMatch(/Status:\s+inactive/);
    expect((await kiln(['builder', 'rm', 'loc'])).code).toBe(0);
  });

  it('bad input: unknown driver, remote without endpoint, half the TLS files', async () => {
    const driver = await kiln(['builder', 'create', '--driver', 'kubernetes']);
    expect(driver.code).toBe(2);
    expect(driver.stderr).toContain('failed to find driver "kubernetes"');
    const noEndpoint = await kiln(['builder', 'create', '--driver', 'remote']);
    expect(noEndpoint.code).toBe(2);
    expect(noEndpoint.stderr).toContain('the remote driver needs an ENDPOINT');
    const half = await kiln(['builder', 'create', '--driver', 'remote', '--driver-opt', `cacert=${certs.files('client').caCert}`, 'tcp://127.0.0.1:1']);
    expect(half.code).toBe(2);
    expect(half.stderr).toContain('needs all of cacert=, cert= and key=');
  });
});
