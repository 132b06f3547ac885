import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, readdirSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kilnBin, runKiln, startKilnd, type Kilnd, e2eWorker } from '@kiln/testkit';

describe(`cancelling a build [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let daemon: Kilnd;
  let ctx: string;
  beforeAll(async () => {
    daemon = await startKilnd();
    ctx = mkdtempSync(join(tmpdir(), 'kiln-cancel-'));
    // Big enough that the transfer is still running when Ctrl-C arrives.
    writeFileSync(join(ctx, 'big.bin'), Buffer.alloc(512 * 1024 * 1024, 3));
    writeFileSync(join(ctx, 'small.txt'), 'ok\n');
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM scratch\nCOPY big.bin /\n');
    writeFileSync(join(ctx, 'small.Dockerfile'), 'FROM scratch\nCOPY small.txt /\n');
  }, 60_000);
  afterAll(async () => {
    await daemon?.stop();
    rmSync(ctx, { recursive: true, force: true });
  });

  it('stops on Ctrl-C, writes no output, and the daemon builds the next request', async () => {
    const out = join(ctx, 'out');
    const child = spawn(kilnBin(), ['build', '--addr', daemon.addr, '--progress=plain', '-o', `type=local,dest=${out}`, ctx], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // Interrupt once the transfer has started.
    await new Promise<void>((resolve) => {
      const onData = () => {
        if (/#2 /.test(stderr)) {
          child.stderr.off('data', onData);
          resolve();
        }
      };
      child.stderr.on('data', onData);
    });
    const started = Date.now();
    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(code, stderr).not.toBe(0);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(existsSync(out) ? readdirSync(out) : []).toEqual([]);

    const next = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '-f', join(ctx, 'small.Dockerfile'), '-o', `type=local,dest=${join(ctx, 'out2')}`, ctx]);
    expect(next.code, `${next.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
    expect(readdirSync(join(ctx, 'out2'))).toEqual(['small.txt']);
  }, 60_000);
});
