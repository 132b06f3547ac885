import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runKiln, startKilnCluster, startKilnd, startKilnNats, type RunResult } from '@kiln/testkit';

/** A build context with files of several modes, a large file no step reads, and an ignored dir. */
function makeContext(): string {
  const ctx = mkdtempSync(join(tmpdir(), 'kiln-ctx-'));
  mkdirSync(join(ctx, 'app', 'lib'), { recursive: true });
  mkdirSync(join(ctx, 'ignored'));
  writeFileSync(join(ctx, 'hello.txt'), 'hello kiln\n');
  writeFileSync(join(ctx, 'run.sh'), '#!/bin/sh\necho run\n');
  chmodSync(join(ctx, 'run.sh'), 0o755);
  writeFileSync(join(ctx, 'app', 'main.js'), 'console.log(1)\n');
  writeFileSync(join(ctx, 'app', 'lib', 'util.js'), 'export {}\n');
  chmodSync(join(ctx, 'app', 'lib', 'util.js'), 0o640);
  writeFileSync(join(ctx, 'app', 'debug.log'), 'ignored by .dockerignore\n');
  writeFileSync(join(ctx, 'ignored', 'secret.txt'), 'never sent\n');
  writeFileSync(join(ctx, 'unused.bin'), Buffer.alloc(4 * 1024 * 1024, 7));
  writeFileSync(join(ctx, '.dockerignore'), 'ignored\n**/*.log\n');
  writeFileSync(
    join(ctx, 'Dockerfile'),
    ['FROM scratch', 'COPY hello.txt /', 'COPY run.sh /bin/run', 'COPY app /srv/app/', 'COPY --chmod=0600 hello.txt /etc/private', 'CMD ["/bin/run"]', ''].join('\n'),
  );
  return ctx;
}

function transferredBytes(progress: string): number {
  const m = /transferring context: ([\d.]+)([kMG]?B)/.exec(progress);
  if (!m) throw new Error(`no "transferring context" line in progress:\n${progress}`);
  const unit = { B: 1, kB: 1e3, MB: 1e6, GB: 1e9 }[m[2] as 'B' | 'kB' | 'MB' | 'GB'];
  return Number(m[1]) * unit;
}

const modeOf = (p: string) => (statSync(p).mode & 0o7777).toString(8);

interface Topology {
  topology: 'all-in-one' | 'split';
  worker: 'oci' | 'containerd';
  start(): Promise<{ addr: string; env?: Record<string, string>; logs(): string; stop(): Promise<void> }>;
}

const topologies: Topology[] = (['oci', 'containerd'] as const).flatMap((worker) => [
  { topology: 'all-in-one' as const, worker, start: () => startKilnd({ worker }) },
  {
    topology: 'split' as const,
    worker,
    async start() {
      const nats = await startKilnNats();
      const cluster = await startKilnCluster(nats, ['solver', 'frontend', 'exporters', `worker-${worker}`, 'content']).catch(async (err) => {
        await nats.stop();
        throw err;
      });
      return { addr: cluster.addr, env: cluster.env, logs: () => cluster.logs(), stop: async () => (await cluster.stop(), await nats.stop()) };
    },
  },
]);

describe.each(topologies)('walking skeleton [topology=$topology, worker=$worker]', (topology) => {
  let daemon: Awaited<ReturnType<Topology['start']>>;
  let ctx: string;
  let out: string;
  const kiln = async (args: string[]): Promise<RunResult> => {
    const res = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', ...args], { env: daemon.env });
    if (process.env.KILN_E2E_VERBOSE) console.log(res.stderr);
    return res;
  };

  beforeAll(async () => {
    daemon = await topology.start();
    ctx = makeContext();
    out = mkdtempSync(join(tmpdir(), 'kiln-out-'));
  }, 90_000);

  afterAll(async () => {
    await daemon?.stop();
    rmSync(ctx, { recursive: true, force: true });
    rmSync(out, { recursive: true, force: true });
  });

  const onFailure = (res: RunResult) => `exit ${res.code}\nstderr:\n${res.stderr}\ndaemon logs:\n${daemon.logs().slice(-8000)}`;

  it('builds FROM scratch + COPY into a local directory with modes, sending only the files it reads', async () => {
    const dest = join(out, 'local');
    const res = await kiln(['-o', `type=local,dest=${dest}`, ctx]);
    expect(res.code, onFailure(res)).toBe(0);
    expect(readFileSync(join(dest, 'hello.txt'), 'utf8')).toBe('hello kiln\n');
    expect(readFileSync(join(dest, 'bin', 'run'), 'utf8')).toContain('echo run');
    expect(modeOf(join(dest, 'bin', 'run'))).toBe('755');
    expect(readFileSync(join(dest, 'srv', 'app', 'main.js'), 'utf8')).toBe('console.log(1)\n');
    expect(modeOf(join(dest, 'srv', 'app', 'lib', 'util.js'))).toBe('640');
    expect(modeOf(join(dest, 'etc', 'private'))).toBe('600');
    expect(existsSync(join(dest, 'srv', 'app', 'debug.log'))).toBe(false);
    expect(existsSync(join(dest, 'unused.bin'))).toBe(false);
    expect(existsSync(join(dest, 'ignored'))).toBe(false);
    // The 4 MiB file no COPY names never crosses the session.
    const sent = transferredBytes(res.stderr);
    expect(sent).toBeGreaterThan(0);
    expect(sent).toBeLessThan(64 * 1024);
  });

  it('lists the worker of this topology', async () => {
    const res = await runKiln(['workers', '--addr', daemon.addr], { env: daemon.env });
    expect(res.code, res.stderr).toBe(0);
    const executor = topology.worker === 'oci' ? 'runc' : 'containerd';
    // The host platform first, then any that binfmt_misc emulates.
    expect(res.stdout).toMatch(new RegExp(`linux/${process.arch === 'x64' ? 'amd64' : process.arch}(,\\S+)?\\s+.*kiln\\.executor=${executor}`));
  });

  it('writes a tar that GNU tar reads', async () => {
    const file = join(out, 'result.tar');
    const res = await kiln(['-o', `type=tar,dest=${file}`, ctx]);
    expect(res.code, onFailure(res)).toBe(0);
    const listing = execFileSync('tar', ['-tvf', file], { encoding: 'utf8' });
    expect(listing).toMatch(/-rwxr-xr-x .* bin\/run/);
    expect(listing).toMatch(/srv\/app\/lib\/util.js/);
    expect(listing).not.toMatch(/unused.bin/);
  });

  it('fails with the Dockerfile line and exit code 1 when a source is missing', async () => {
    const bad = mkdtempSync(join(tmpdir(), 'kiln-bad-'));
    writeFileSync(join(bad, 'Dockerfile'), 'FROM scratch\nCOPY hello.txt /\nCOPY missing.txt /x\n');
    writeFileSync(join(bad, 'hello.txt'), 'hi\n');
    const res = await kiln(['-o', `type=local,dest=${join(out, 'bad')}`, bad]);
    rmSync(bad, { recursive: true, force: true });
    expect(res.code, onFailure(res)).toBe(1);
    expect(res.stderr).toMatch(/ERROR: .*missing\.txt.*\(Dockerfile:3\)/);
  });

  it('rejects a Dockerfile syntax error naming the line', async () => {
    const bad = mkdtempSync(join(tmpdir(), 'kiln-bad-'));
    writeFileSync(join(bad, 'Dockerfile'), 'FROM scratch\nCOPPY a /\n');
    const res = await kiln(['-o', `type=local,dest=${join(out, 'bad2')}`, bad]);
    rmSync(bad, { recursive: true, force: true });
    expect(res.code, onFailure(res)).toBe(1);
    expect(res.stderr).toMatch(/ERROR: .*COPPY.*Dockerfile:2/);
  });
});

describe('kiln without --addr', () => {
  it('starts the all-in-one daemon in the background once, and reuses it', async () => {
    const root = mkdtempSync(join(tmpdir(), 'kiln-auto-'));
    const ctx = makeContext();
    const env = { KILN_ROOT: root, KILN_ADDR: '' };
    try {
      const first = await runKiln(['build', '--progress=plain', '-o', `type=local,dest=${join(root, 'out1')}`, ctx], { env });
      expect(first.code, first.stderr).toBe(0);
      const pid = readFileSync(join(root, 'kilnd.pid'), 'utf8').trim();
      const second = await runKiln(['build', '--progress=plain', '-o', `type=local,dest=${join(root, 'out2')}`, ctx], { env });
      expect(second.code, second.stderr).toBe(0);
      expect(readFileSync(join(root, 'kilnd.pid'), 'utf8').trim()).toBe(pid);
      expect(readFileSync(join(root, 'out2', 'hello.txt'), 'utf8')).toBe('hello kiln\n');
      // Graceful shutdown on SIGTERM removes the socket and the pid file.
      process.kill(Number(pid), 'SIGTERM');
      for (let i = 0; i < 100 && existsSync(join(root, 'kilnd.pid')); i++) await new Promise((r) => setTimeout(r, 100));
      expect(existsSync(join(root, 'kilnd.pid'))).toBe(false);
      expect(existsSync(join(root, 'kiln.sock'))).toBe(false);
    } finally {
      const pidFile = join(root, 'kilnd.pid');
      if (existsSync(pidFile)) process.kill(Number(readFileSync(pidFile, 'utf8')), 'SIGKILL');
      rmSync(root, { recursive: true, force: true });
      rmSync(ctx, { recursive: true, force: true });
    }
  });
});

describe('kiln usage errors', () => {
  it('exits 2 naming the flag', async () => {
    const res = await runKiln(['build', '--outptu', 'x', '.']);
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/--outptu/);
  });
});
