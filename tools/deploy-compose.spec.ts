import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileDaemonOptions } from '@kiln/kilnd';

// deploy/compose without docker: each kilnd service's command, compiled by
// kilnd's own option parser against the files its bind mounts would give
// it (made as tools/compose-up.sh makes them). tools/compose-up.sh runs the
// real cluster; this keeps the file in step with kilnd's flags in seconds.
const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const composeDir = join(repo, 'deploy', 'compose');

/** Compose's ${VAR:-default} and ${VAR}, from `env` (then the default). */
const substitute = (text: string, env: Record<string, string>) =>
  text.replace(/\$\{([A-Z_]+)(?::-([^}]*))?\}/g, (_, name: string, def?: string) => env[name] ?? def ?? '');

let tmp: string;
let secrets: string;
let services: Record<string, any>;

beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'kiln-compose-'));
  secrets = join(tmp, 'secrets');
  // The same certificates and passwords tools/compose-up.sh makes.
  const certs = spawnSync(join(repo, 'tools', 'make-certs.sh'), [join(secrets, 'tls'), 'solver', 'frontend', 'exporters', 'content', 'worker-oci:worker', 'worker-containerd:worker', 'client'], { encoding: 'utf8' });
  expect(certs.status, certs.stderr).toBe(0);
  const nats = spawnSync('sh', [join(repo, 'tools', 'make-nats-secrets.sh'), join(secrets, 'nats')], { encoding: 'utf8' });
  expect(nats.status, nats.stderr).toBe(0);
  const text = substitute(readFileSync(join(composeDir, 'compose.yaml'), 'utf8'), { KILN_COMPOSE_SECRETS: secrets });
  services = parseYaml(text, { merge: true }).services;
});
afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

/** Copies each bind-mounted file of `svc` to `root`+its container path; returns the named volumes. */
function layOut(svc: any, root: string): string[] {
  const named: string[] = [];
  for (const v of svc.volumes as string[]) {
    const [src, dst] = v.split(':') as [string, string];
    if (!src.startsWith('.') && !isAbsolute(src)) {
      named.push(`${src}:${dst}`);
      continue;
    }
    const from = isAbsolute(src) ? src : join(composeDir, src);
    expect(existsSync(from), `${v}: ${from} exists`).toBe(true);
    mkdirSync(dirname(join(root, dst)), { recursive: true });
    let content = readFileSync(from, 'utf8');
    if (dst === '/etc/kiln/kilnd.toml') content = content.replaceAll('"/etc/kiln/', `"${root}/etc/kiln/`).replaceAll('"/var/lib/kiln', `"${root}/var/lib/kiln`);
    writeFileSync(join(root, dst), content);
  }
  return named;
}

describe('deploy/compose', () => {
  it('has NATS and every tier, worker-oci and worker-containerd included, all on the one image', () => {
    expect(Object.keys(services).sort()).toEqual(['content', 'exporters', 'frontend', 'nats', 'solver', 'worker-containerd', 'worker-oci']);
    for (const [name, svc] of Object.entries(services)) {
      expect(svc.image, name).toBe('kiln:dev');
      expect(svc.network_mode, name).toBe('host');
    }
    expect(services['worker-oci'].privileged).toBe(true);
    expect(services['worker-containerd'].privileged).toBe(true);
    const override = parseYaml(readFileSync(join(composeDir, 'compose.unprivileged.yaml'), 'utf8'), { merge: true }).services;
    expect(Object.keys(override).sort()).toEqual(['worker-containerd', 'worker-oci']);
  });

  it('NATS runs with JetStream and finds every file deploy/nats/run-nats-server.sh reads', () => {
    const nats = services.nats;
    expect(nats.entrypoint).toEqual(['/usr/bin/tini', '--', '/opt/kiln/deploy/nats/run-nats-server.sh']);
    expect(nats.command).toContain('--jetstream');
    const root = join(tmp, 'nats');
    expect(layOut(nats, root)).toEqual(['nats-data:/data']);
    const runner = readFileSync(join(repo, 'deploy', 'nats', 'run-nats-server.sh'), 'utf8');
    for (const f of ['ca.pem', 'nats-server.pem', 'nats-server-key.pem', ...['solver', 'frontend', 'exporters', 'content', 'worker'].map((u) => `${u}.password`)]) {
      expect(existsSync(join(root, 'etc/kiln/nats', f)), f).toBe(true);
    }
    expect(runner).toContain('KILN_NATS_SECRETS:-/etc/kiln/nats');
    // Only what the server needs: never the CA key or a client key.
    expect(readFileSync(join(composeDir, 'compose.yaml'), 'utf8')).not.toContain('ca-key.pem');
  });

  it("kilnd accepts every tier's command with the files its mounts give it: its own certificate and NATS user", () => {
    const ports = new Set<string>();
    for (const [name, svc] of Object.entries(services)) {
      if (name === 'nats') continue;
      const root = join(tmp, name);
      const volumes = layOut(svc, root);
      const args = (svc.command as string[]).map((a) => (a === '/etc/kiln/kilnd.toml' ? `${root}${a}` : a));
      const opts = compileDaemonOptions(args, {});
      expect(opts.tier).toBe(name);
      expect(opts.advertise).toBe(`tcp://${opts.listen!.kind === 'tcp' ? `${opts.listen!.host}:${opts.listen!.port}` : ''}`);
      ports.add(String(opts.listen!.kind === 'tcp' && opts.listen!.port));
      const role = name.startsWith('worker-') ? 'worker' : name;
      const auth = opts.natsAuth as { user: string; password: string };
      expect(auth.user).toBe(role);
      expect(auth.password).toBe(readFileSync(join(secrets, 'nats', `${role}.password`), 'utf8').trim());
      expect(readFileSync(opts.tls!.cert, 'utf8')).toBe(readFileSync(join(secrets, 'tls', `${name}.pem`), 'utf8'));
      expect(opts.nats).toBe('nats://127.0.0.1:4222');
      if (['solver', 'content', 'worker-oci', 'worker-containerd'].includes(name)) expect(volumes, name).toEqual([`${name}-state:/var/lib/kiln`]);
      else expect(volumes, name).toEqual([]);
    }
    expect(ports.size).toBe(6);
  });
});
