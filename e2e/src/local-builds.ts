import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runKiln } from '@kiln/testkit';

/**
 * Builds Dockerfile texts against one context into numbered local outputs
 * (`-f Dockerfile.N -o type=local`), all under one temp dir that `cleanup()`
 * removes, so a spec leaves no output folder behind.
 */
export function localBuilds(addr: () => string, ctx: () => string) {
  const outs = mkdtempSync(join(tmpdir(), 'kiln-e2e-out-'));
  let n = 0;
  return {
    async build(dockerfile: string): Promise<{ code: number; stderr: string; out: string }> {
      const file = join(ctx(), `Dockerfile.${++n}`);
      writeFileSync(file, dockerfile);
      const out = join(outs, String(n));
      const res = await runKiln(['build', '--addr', addr(), '--progress=plain', '-f', file, '-o', `type=local,dest=${out}`, ctx()]);
      return { code: res.code, stderr: res.stderr, out };
    },
    cleanup(): void {
      rmSync(outs, { recursive: true, force: true });
    },
  };
}
