import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runKiln, startKilnd, type Kilnd, e2eWorker } from '@kiln/testkit';

/** Exec ops the daemon ran, from its debug log. */
const execRuns = (logs: string) => logs.split('\n').filter((l) => l.includes('"msg":"running op"') && l.includes('"kind":"exec"')).length;

/**
 * Steps a build took from `--cache-from` become the daemon's cached results:
 * a later build may export them, so their layer blobs must outlive the
 * importing build (a content GC in between must not take them).
 */
describe(`results imported with --cache-from, exported after a content GC [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let work: string;
  let ctx: string;
  let daemon: Kilnd | undefined;

  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'kiln-import-lease-'));
    ctx = join(work, 'ctx');
    mkdirSync(ctx);
    copyFileSync('/bin/busybox', join(ctx, 'busybox'));
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM scratch\nCOPY --chmod=0755 busybox /bin/busybox\nRUN ["/bin/busybox", "sh", "-c", "echo made > /made"]\n');
  });
  afterAll(async () => {
    await daemon?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('keeps the imported layers leased with the cache record: the later export finds every blob', async () => {
    const cache = join(work, 'cache');
    const build = async (d: Kilnd, ...flags: string[]) => {
      const res = await runKiln(['build', '--addr', d.addr, '--progress=plain', ...flags, ctx]);
      expect(res.code, `${res.stderr}\n${d.logs().slice(-4000)}`).toBe(0);
      return res;
    };

    daemon = await startKilnd();
    await build(daemon, '--cache-to', `type=local,dest=${cache},mode=max`);
    // The daemon forgets what it built (records, refs, blobs), then takes every step from the cache dir.
    expect((await runKiln(['prune', '-f', '--addr', daemon.addr])).code).toBe(0);
    const before = execRuns(daemon.logs());
    await build(daemon, '--cache-from', `type=local,src=${cache}`);
    expect(execRuns(daemon.logs()) - before).toBe(0);
    // Nothing refers to the import's blobs but the daemon's own cache: a content GC must keep them.
    const gc = await runKiln(['prune', '-f', '--addr', daemon.addr, '--filter', 'type=content']);
    expect(gc.code, gc.stderr).toBe(0);
    rmSync(cache, { recursive: true, force: true });

    const res = await build(daemon, '-o', `type=oci,dest=${join(work, 'out.tar')}`);
    expect(execRuns(daemon.logs()) - before, res.stderr).toBe(0);
  }, 120_000);
});
