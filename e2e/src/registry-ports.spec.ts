import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findRegistry, runKiln, startKilnd, startRegistry, type Kilnd, type TestRegistry , e2eWorker } from '@kiln/testkit';

/** Ports the fetch standard blocks that a registry may well use; the registry takes the first free one. */
const BLOCKED_PORTS = [10080, 6000, 6665, 6666, 6667, 6668, 6669];

describe.skipIf(!findRegistry() || !existsSync('/bin/busybox'))(`a registry on a port fetch refuses (10080, 6000, ...) [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let registry: TestRegistry;
  let daemon: Kilnd;
  let work: string;

  beforeAll(async () => {
    registry = await startRegistry({ ports: BLOCKED_PORTS });
    daemon = await startKilnd();
    work = mkdtempSync(join(tmpdir(), 'kiln-registry-ports-'));
  }, 60_000);

  afterAll(async () => {
    await daemon?.stop();
    await registry?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('pushes an image there, builds FROM it (pull) and inspects it with imagetools', async () => {
    // The premise: Node's fetch will not even connect.
    await expect(fetch(`${registry.url}/v2/`)).rejects.toThrow(/fetch failed/);

    const ref = `${registry.host}/kiln/bad-port:1`;
    const base = join(work, 'base');
    mkdirSync(base);
    copyFileSync('/bin/busybox', join(base, 'busybox'));
    writeFileSync(join(base, 'Dockerfile'), 'FROM scratch\nCOPY --chmod=0755 busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n');
    const push = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '--push', '-t', ref, base]);
    expect(push.code, `${push.stderr}\n${daemon.logs().slice(-3000)}`).toBe(0);

    const app = join(work, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'Dockerfile'), `FROM ${ref}\nRUN echo pulled > /pulled.txt\n`);
    const out = join(app, 'out');
    const pull = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '--pull', '-o', `type=local,dest=${out}`, app]);
    expect(pull.code, `${pull.stderr}\n${daemon.logs().slice(-3000)}`).toBe(0);
    expect(readFileSync(join(out, 'pulled.txt'), 'utf8')).toBe('pulled\n');

    const inspect = await runKiln(['imagetools', 'inspect', '--raw', ref]);
    expect(inspect.code, inspect.stderr).toBe(0);
    expect(JSON.parse(inspect.stdout)).toMatchObject({ schemaVersion: 2 });
  }, 120_000);
});
