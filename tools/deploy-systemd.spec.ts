import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '@kiln/testkit';

// deploy/systemd after tools/install.sh: the units name files that exist,
// systemd-analyze finds nothing to warn about, and what they start runs.
const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const TIERS = ['solver', 'frontend', 'exporters', 'content', 'worker-oci', 'worker-containerd'];

let tmp: string;
let prefix: string;
let units: string;

function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) {
  const r = spawnSync(cmd, args, { cwd: opts.cwd, env: { ...process.env, ...opts.env }, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** systemd-analyze verify on the units in `dir`, the template once per tier. */
function verify(dir: string) {
  for (const tier of TIERS) copyFileSync(join(dir, 'kiln-tier@.service'), join(dir, `kiln-tier@${tier}.service`));
  const files = ['kilnd.service', 'kiln-nats.service', ...TIERS.map((t) => `kiln-tier@${t}.service`)].map((f) => `./${f}`);
  return run('systemd-analyze', ['verify', ...files], { cwd: dir });
}

beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'kiln-install-'));
  prefix = join(tmp, 'opt', 'kiln');
  units = join(tmp, 'units');
  const r = run('bash', [join(repo, 'tools', 'install.sh'), '--prefix', prefix, '--systemd', units]);
  expect(r.code, r.stderr).toBe(0);
  expect(r.stdout).toContain(`install: Kiln in ${prefix}`);
});
afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe('tools/install.sh and deploy/systemd', () => {
  it('installs the bundle without dev dependencies, sources or the testkit', () => {
    const ls = (p: string) => run('ls', [join(prefix, p)]).stdout.split('\n').filter(Boolean);
    expect(ls('bin')).toEqual(['kiln', 'kiln-cli-loader.mjs', 'kiln.mjs', 'kilnd']);
    expect(ls('packages')).not.toContain('testkit');
    expect(ls('packages/kilnd')).toEqual(['dist', 'package.json']);
    expect(ls('node_modules')).toContain('better-sqlite3');
    expect(ls('node_modules')).not.toContain('vitest');
    expect(ls('node_modules')).not.toContain('typescript');
    expect(ls('node_modules/better-sqlite3')).not.toContain('deps');
    expect(JSON.parse(readFileSync(join(prefix, 'kiln-bundle.json'), 'utf8')).node).toBe('>=20.19');
  });

  it('systemd-analyze verify passes on every unit, each tier an instance of the template', () => {
    const r = verify(units);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });

  it('systemd-analyze verify names the missing command when Kiln is not where the units point', () => {
    const bare = join(tmp, 'bare-units');
    const nowhere = join(tmp, 'not-installed');
    mkdirSync(bare);
    for (const f of ['kilnd.service', 'kiln-tier@.service', 'kiln-nats.service']) {
      writeFileSync(join(bare, f), readFileSync(join(repo, 'deploy', 'systemd', f), 'utf8').replaceAll('/opt/kiln', nowhere));
    }
    const r = verify(bare);
    expect(r.stderr).toContain(`kilnd.service: Command ${nowhere}/bin/kilnd is not executable`);
    expect(r.stderr).toContain(`kiln-tier@worker-oci.service: Command ${nowhere}/bin/kilnd is not executable`);
    expect(r.stderr).toContain(`kiln-nats.service: Command ${nowhere}/deploy/nats/run-nats-server.sh is not executable`);
  });

  it('the tier template reads only variables the example env file sets', () => {
    const template = readFileSync(join(units, 'kiln-tier@.service'), 'utf8');
    const used = new Set([...template.matchAll(/\$\{?([A-Z_]+)\}?/g)].map((m) => m[1]!));
    const example = readFileSync(join(repo, 'deploy', 'systemd', 'tier.env.example'), 'utf8');
    const set = new Set([...example.matchAll(/^([A-Z_]+)=/gm)].map((m) => m[1]!));
    expect([...used].sort()).toEqual(['KILN_ADVERTISE', 'KILN_FLAGS', 'KILN_LISTEN', 'KILN_NATS', 'KILN_NATS_USER']);
    for (const v of used) expect(set, v).toContain(v);
  });

  it('the installed kilnd serves the installed CLI (all-in-one, as kilnd.service starts it)', async () => {
    const root = join(tmp, 'root');
    const addr = `unix://${join(tmp, 'kiln.sock')}`;
    const daemon = spawn(join(prefix, 'bin', 'kilnd'), ['--root', root, '--addr', addr], { stdio: ['ignore', 'pipe', 'pipe'] });
    let logs = '';
    daemon.stdout!.on('data', (d: Buffer) => (logs += d.toString()));
    daemon.stderr!.on('data', (d: Buffer) => (logs += d.toString()));
    const exited = new Promise<void>((resolve) => daemon.once('exit', () => resolve()));
    try {
      let workers = { code: -1, stdout: '', stderr: '' };
      for (let i = 0; i < 100 && workers.code !== 0; i++) {
        await new Promise((r) => setTimeout(r, 200));
        workers = run(join(prefix, 'bin', 'kiln'), ['workers', '--addr', addr]);
      }
      expect(workers.code, workers.stderr + logs).toBe(0);
      expect(workers.stdout).toMatch(/linux\/amd64|linux\/arm64/);
    } finally {
      daemon.kill('SIGTERM');
      await exited;
    }
  });

  it('kiln-nats.service starts NATS with TLS, the tier users and JetStream from tools/make-nats-secrets.sh', async () => {
    const secrets = join(tmp, 'nats');
    const made = run('sh', [join(repo, 'tools', 'make-nats-secrets.sh'), secrets]);
    expect(made.code, made.stderr).toBe(0);
    for (const u of ['solver', 'frontend', 'exporters', 'content', 'worker']) expect(readFileSync(join(secrets, `${u}.password`), 'utf8')).toMatch(/^k[0-9a-f]{48}\n$/);
    const again = run('sh', [join(repo, 'tools', 'make-nats-secrets.sh'), secrets]);
    expect(again.stdout).toBe(''); // nothing remade
    const port = await freePort();
    const nats = spawn(join(prefix, 'deploy', 'nats', 'run-nats-server.sh'), ['--jetstream', '--store_dir', join(tmp, 'js'), '-a', '127.0.0.1', '-p', String(port)], {
      env: { ...process.env, KILN_NATS_SECRETS: secrets },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let logs = '';
    const ready = new Promise<void>((resolve) => {
      const on = (d: Buffer) => {
        logs += d.toString();
        if (logs.includes('Server is ready')) resolve();
      };
      nats.stdout!.on('data', on);
      nats.stderr!.on('data', on);
    });
    const exited = new Promise<void>((resolve) => nats.once('exit', () => resolve()));
    try {
      await Promise.race([ready, exited, new Promise((r) => setTimeout(r, 15_000))]);
      expect(logs).toContain('Server is ready');
      expect(logs).toContain('Starting JetStream');
      expect(logs).toContain('TLS required for client connections');
    } finally {
      nats.kill('SIGTERM');
      await exited;
    }
  });
});
