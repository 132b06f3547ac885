import { copyFileSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runKiln, startKilnd, type Kilnd } from '@kiln/testkit';

const BUSYBOX = '/bin/busybox';

/** Exec ops the daemon ran, from its debug log ("running op" with kind "exec"). */
function execRuns(logs: string): number {
  return logs.split('\n').filter((l) => l.includes('"msg":"running op"') && l.includes('"kind":"exec"')).length;
}

describe('persistent build cache [topology=all-in-one, worker=oci]', () => {
  let root: string;
  let ctx: string;
  let daemon: Kilnd | undefined;
  let n = 0;

  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'kiln-cache-root-'));
    ctx = mkdtempSync(join(tmpdir(), 'kiln-cache-ctx-'));
    copyFileSync(BUSYBOX, join(ctx, 'busybox'));
    writeFileSync(join(ctx, 'a.txt'), 'first\n');
    writeFileSync(join(ctx, 'unread.txt'), 'never copied\n');
    writeFileSync(
      join(ctx, 'Dockerfile'),
      [
        'FROM scratch AS base',
        'COPY --chmod=0755 busybox /bin/busybox',
        'RUN ["/bin/busybox", "sh", "-c", "/bin/busybox --install -s /bin && head -c 16 /dev/urandom | od -An -tx1 > /base-rand"]',
        'FROM base AS final',
        'COPY a.txt /a.txt',
        'RUN head -c 16 /dev/urandom | od -An -tx1 > /final-rand && cat /a.txt >> /final-rand',
        '',
      ].join('\n'),
    );
  });
  afterAll(async () => {
    await daemon?.stop();
    rmSync(root, { recursive: true, force: true });
    rmSync(ctx, { recursive: true, force: true });
  });

  async function build(...flags: string[]): Promise<{ stderr: string; base: string; final: string; execs: number }> {
    const out = join(ctx, `out-${++n}`);
    const before = execRuns(daemon!.logs());
    const res = await runKiln(['build', '--addr', daemon!.addr, '--progress=plain', ...flags, '-o', `type=local,dest=${out}`, ctx]);
    expect(res.code, `${res.stderr}\n${daemon!.logs().slice(-4000)}`).toBe(0);
    const result = {
      stderr: res.stderr,
      base: readFileSync(join(out, 'base-rand'), 'utf8'),
      final: readFileSync(join(out, 'final-rand'), 'utf8'),
      execs: execRuns(daemon!.logs()) - before,
    };
    rmSync(out, { recursive: true, force: true });
    return result;
  }

  it('reuses every step after a daemon restart, survives mtime changes, reruns on content changes and --no-cache', async () => {
    daemon = await startKilnd({ worker: 'oci', root });
    const first = await build();
    expect(first.execs).toBe(2);
    await daemon.stop();

    daemon = await startKilnd({ worker: 'oci', root });
    const again = await build();
    expect(again.execs).toBe(0);
    expect(again.base).toBe(first.base);
    expect(again.final).toBe(first.final);
    expect(again.stderr).toMatch(/\[final 2\/2\] RUN head[^\n]*\n#\d+ CACHED/);
    expect(again.stderr).not.toMatch(/#\d+ DONE[^\n]*\n[^#]*RUN/);

    // Touching files (and changing ones no step reads) keeps the cache.
    utimesSync(join(ctx, 'a.txt'), 1_000_000, 1_000_000);
    writeFileSync(join(ctx, 'unread.txt'), 'changed but still never copied\n');
    const touched = await build();
    expect(touched.execs).toBe(0);
    expect(touched.final).toBe(first.final);

    // Changing a copied file reruns the steps after the COPY that reads it (not the base stage's, which reads busybox only).
    writeFileSync(join(ctx, 'a.txt'), 'second\n');
    const changed = await build();
    expect(changed.execs).toBe(1);
    expect(changed.base).toBe(first.base);
    expect(changed.final).toMatch(/second\n$/);

    // --no-cache-filter reruns one stage's steps; --no-cache reruns all.
    const filtered = await build('--no-cache-filter', 'final');
    expect(filtered.execs).toBe(1);
    expect(filtered.base).toBe(changed.base);
    expect(filtered.final).not.toBe(changed.final);
    const none = await build('--no-cache');
    expect(none.execs).toBe(2);
    expect(none.base).not.toBe(changed.base);
  }, 180_000);
});
