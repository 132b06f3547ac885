import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, kilnBin, runKiln } from '@kiln/testkit';
import { afterAll, describe, expect, it } from 'vitest';

/** Plain TCP that other hosts can reach is the unauthenticated port of hole 2: refused unless asked for by name. */
describe('kiln daemon on plain non-loopback TCP', () => {
  const root = mkdtempSync(join(tmpdir(), 'kiln-insecure-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('refuses to start without TLS or --insecure-tcp', async () => {
    const port = await freePort();
    const res = await runKiln(['daemon', '--root', root, '--addr', `tcp://0.0.0.0:${port}`], { timeoutMs: 60_000 });
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/refusing plain TCP on tcp:\/\/0\.0\.0\.0:\d+.*--insecure-tcp/);
  });

  it('starts with --insecure-tcp and warns', async () => {
    const port = await freePort();
    const proc = spawn(kilnBin(), ['daemon', '--root', root, '--addr', `tcp://0.0.0.0:${port}`, '--insecure-tcp'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise((resolve) => proc.once('exit', resolve));
    try {
      const deadline = Date.now() + 60_000;
      while (!out.includes('kilnd ready') && proc.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      expect(out).toContain('kilnd ready');
      expect(out).toMatch(/"level":(40|"warn").*serving plain TCP without authentication/);
    } finally {
      proc.kill('SIGTERM');
      await exited;
    }
  }, 90_000);
});
