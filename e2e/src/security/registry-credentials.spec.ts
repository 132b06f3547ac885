// Issue 12, hole 4: a client's build must never pull or push with the
// daemon's registry credentials. Debian's docker-registry behind htpasswd on
// 127.0.0.1; the daemon's own DOCKER_CONFIG holds the credentials, the
// client's HOME holds none. Before, both attacks below succeeded: the push
// landed in the registry as the daemon's user, and the private base image
// was pulled. With `[registry] daemon-credentials = true` the operator
// lends the daemon's identity on purpose, and only then do they work.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findRegistry, pushBusyboxImage, runKiln, startKilnd, startRegistry, type Kilnd, type TestRegistry, e2eWorker } from '@kiln/testkit';

const USER = 'kiln-daemon';
const PASSWORD = 'daemon-pw-8d2e';
const basicAuth = `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}`;
const canRun = process.getuid?.() === 0 && !!findRegistry() && existsSync('/bin/busybox') && spawnSync('sh', ['-c', 'command -v runc']).status === 0;

describe.skipIf(!canRun)(`registry credentials stay with their owner [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let registry: TestRegistry;
  let daemon: Kilnd;
  let work: string;
  let daemonDockerConfig: string;
  let clientHome: string;

  const catalog = async (): Promise<string[]> => {
    const res = await fetch(`${registry.url}/v2/_catalog`, { headers: { authorization: basicAuth } });
    return ((await res.json()) as { repositories?: string[] }).repositories ?? [];
  };
  const kiln = (d: Kilnd, args: string[]) =>
    runKiln(['build', '--addr', d.addr, '--progress=plain', ...args], { env: { HOME: clientHome, DOCKER_CONFIG: undefined }, timeoutMs: 120_000 });

  beforeAll(async () => {
    registry = await startRegistry({ htpasswd: { user: USER, password: PASSWORD } });
    work = mkdtempSync(join(tmpdir(), 'kiln-regcreds-e2e-'));
    await pushBusyboxImage(registry, work, 'private/base', '1', { authorization: basicAuth });
    // The daemon's own docker config: the operator's login to the registry.
    daemonDockerConfig = join(work, 'daemon-docker');
    mkdirSync(daemonDockerConfig);
    writeFileSync(join(daemonDockerConfig, 'config.json'), JSON.stringify({ auths: { [registry.host]: { auth: Buffer.from(`${USER}:${PASSWORD}`).toString('base64') } } }));
    // The client: no credentials at all.
    clientHome = join(work, 'client-home');
    mkdirSync(join(clientHome, '.docker'), { recursive: true });
    writeFileSync(join(clientHome, '.docker', 'config.json'), JSON.stringify({ auths: {} }));
    mkdirSync(join(work, 'push-ctx'));
    writeFileSync(join(work, 'push-ctx', 'f.txt'), 'planted\n');
    writeFileSync(join(work, 'push-ctx', 'Dockerfile'), 'FROM scratch\nCOPY f.txt /f.txt\n');
    mkdirSync(join(work, 'pull-ctx'));
    writeFileSync(join(work, 'pull-ctx', 'Dockerfile'), `FROM ${registry.host}/private/base:1\nRUN cat /etc/passwd > /stolen\n`);
    daemon = await startKilnd({ env: { DOCKER_CONFIG: daemonDockerConfig } });
  }, 90_000);

  afterAll(async () => {
    await daemon?.stop();
    await registry?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('refuses a push of a client without credentials, and nothing lands in the registry', async () => {
    const res = await kiln(daemon, ['--push', '-t', `${registry.host}/planted/app:1`, join(work, 'push-ctx')]);
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-3000)}`).toBe(1);
    expect(res.stderr).toContain(`${registry.host}/planted/app`);
    expect(res.stderr).toMatch(/unauthorized \(HTTP 401\)/);
    expect(await catalog()).toEqual(['private/base']);
  });

  it('refuses a pull of a private image for a client without credentials', async () => {
    const res = await kiln(daemon, [join(work, 'pull-ctx')]);
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-3000)}`).toBe(1);
    expect(res.stderr).toContain(`${registry.host}/private/base:1`);
    expect(res.stderr).toMatch(/unauthorized \(HTTP 401\)/);
  });

  it('lends the daemon credentials only when the operator opts in with [registry] daemon-credentials = true', async () => {
    const config = join(work, 'kilnd.toml');
    writeFileSync(config, '[registry]\ndaemon-credentials = true\n');
    const lending = await startKilnd({ env: { DOCKER_CONFIG: daemonDockerConfig }, args: ['--config', config] });
    try {
      expect(lending.logs()).toMatch(/daemon-credentials = true: every client pulls and pushes with this daemon/);
      const res = await kiln(lending, ['--push', '-t', `${registry.host}/lent/app:1`, join(work, 'push-ctx')]);
      expect(res.code, `${res.stderr}\n${lending.logs().slice(-3000)}`).toBe(0);
      expect(await catalog()).toContain('lent/app');
    } finally {
      await lending.stop();
    }
  }, 120_000);
});
