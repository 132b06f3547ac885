import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runKiln, startTopology, type KilnTopology } from '@kiln/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/**
 * `--cache-to type=local,dest=...` is written by the solver on the daemon's
 * host, as root. A TCP client (another host) must never pick that path:
 * it could write root-owned files anywhere (e.g. /root/.ssh).
 */
describe('a TCP client cannot make the daemon write or read a daemon-side path [topology=split]', () => {
  let daemon: KilnTopology;
  let ctx: string;
  let victim: string;
  beforeAll(async () => {
    daemon = await startTopology('split');
    ctx = mkdtempSync(join(tmpdir(), 'kiln-ctx-'));
    victim = mkdtempSync(join(tmpdir(), 'kiln-daemon-side-'));
    writeFileSync(join(ctx, 'hello.txt'), 'hello\n');
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM scratch\nCOPY hello.txt /\n');
  }, 90_000);
  afterAll(async () => {
    await daemon?.stop();
    rmSync(ctx, { recursive: true, force: true });
    rmSync(victim, { recursive: true, force: true });
  });

  it('refuses --cache-to type=local,dest=DAEMON_PATH and writes nothing there', async () => {
    const dest = join(victim, 'cache');
    const res = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '--cache-to', `type=local,dest=${dest},mode=max`, ctx], { env: daemon.env });
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-3000)}`).not.toBe(0);
    expect(res.stderr).toMatch(/--cache-to type=local.*unix socket/);
    expect(existsSync(dest)).toBe(false);
    expect(readdirSync(victim)).toEqual([]);
  });

  it('refuses --cache-from type=local,src=DAEMON_PATH', async () => {
    const res = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '--cache-from', `type=local,src=${victim}`, ctx], { env: daemon.env });
    expect(res.code, res.stderr).not.toBe(0);
    expect(res.stderr).toMatch(/--cache-from type=local.*unix socket/);
  });

  it('still builds for the same client without the daemon-side path', async () => {
    const res = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', ctx], { env: daemon.env });
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-3000)}`).toBe(0);
  });
});
