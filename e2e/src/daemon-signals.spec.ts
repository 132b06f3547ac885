import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { kilnBin } from '@kiln/testkit';

describe('kiln daemon and SIGTERM while it starts [topology=all-in-one, worker=oci]', () => {
  // Its socket can answer before the start is over (a test's stop, a service manager's): the
  // signal's default action then killed it mid-reap of a killed predecessor's mounts.
  it('finishes starting, then shuts down gracefully (exit 0, not killed by the signal)', async () => {
    const root = mkdtempSync(join(tmpdir(), 'kiln-sig-'));
    try {
      const proc = spawn(kilnBin(), ['daemon', '--root', root, '--addr', `unix://${join(root, 'kiln.sock')}`, '--network-mode', 'none'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
      const early = new Promise<void>((resolve) => {
        const onData = (d: Buffer) => {
          out += d.toString();
          // The first tier is up; the worker and the socket are not yet.
          if (out.includes('content store opened')) resolve();
        };
        proc.stdout!.on('data', onData);
        proc.stderr!.on('data', onData);
      });
      await early;
      proc.kill('SIGTERM');
      const end = await exited;
      expect(end, out).toEqual({ code: 0, signal: null });
      expect(out).toContain('shutting down');
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
