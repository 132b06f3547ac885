import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { content, control } from '@kiln/api';
import { createKilnClient, createNodeTransport, sha256 } from '@kiln/common';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { kilnBin, runKiln, startKilnd, type Kilnd } from '@kiln/testkit';

describe('kiln du and kiln prune over the content store [topology=all-in-one]', () => {
  let daemon: Kilnd;
  beforeAll(async () => {
    daemon = await startKilnd();
  }, 60_000);
  afterAll(async () => {
    await daemon?.stop();
  });

  it('lists blobs, prunes the unreferenced ones and keeps leased ones', async () => {
    const store = createKilnClient(content.ContentService, createNodeTransport(daemon.addr));
    const write = async (text: string) => {
      const data = new TextEncoder().encode(text);
      async function* reqs() {
        yield { msg: { case: 'header' as const, value: { ref: `e2e-${sha256(text)}`, expectedDigest: sha256(data) } } };
        yield { msg: { case: 'data' as const, value: data } };
      }
      return (await store.write(reqs())).digest;
    };
    const loose = await write('loose blob '.repeat(100));
    const kept = await write('leased blob');
    const { lease } = await store.createLease({ expiresAt: timestampFromMs(Date.now() + 3_600_000) });
    await store.addLeaseResource({ lease: lease!.id, digest: kept });

    const du = await runKiln(['du', '--addr', daemon.addr]);
    expect(du.code, du.stderr).toBe(0);
    expect(du.stdout).toContain(loose);
    expect(du.stdout).toContain(kept);
    expect(du.stdout).toMatch(/Total:\s+1\.\d+kB/);

    const prune = await runKiln(['prune', '-f', '--addr', daemon.addr]);
    expect(prune.code, prune.stderr).toBe(0);
    expect(prune.stdout).toContain(loose);
    expect(prune.stdout).not.toContain(kept);

    const after = await runKiln(['du', '--addr', daemon.addr]);
    expect(after.stdout).not.toContain(loose);
    expect(after.stdout).toContain(kept);

    const bad = await runKiln(['prune', '-f', '--addr', daemon.addr, '--filter', 'color=red']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/unsupported filter "color=red".*--filter/);
  });

  it('lists solver cache records with sizes and step names; prune releases them and the step really runs again', async () => {
    const ctx = mkdtempSync(join(tmpdir(), 'kiln-du-'));
    try {
      copyFileSync('/bin/busybox', join(ctx, 'busybox'));
      writeFileSync(join(ctx, 'Dockerfile'), ['FROM scratch', 'COPY --chmod=0755 busybox /bin/busybox', 'RUN ["/bin/busybox", "sh", "-c", "head -c 300000 /dev/urandom > /blob"]', ''].join('\n'));
      const build = () => runKiln(['build', '--addr', daemon.addr, '--progress=plain', ctx]);
      const first = await build();
      expect(first.code, first.stderr).toBe(0);

      const du = await runKiln(['du', '--addr', daemon.addr, '--verbose', '--filter', 'type=regular']);
      expect(du.code, du.stderr).toBe(0);
      const run = du.stdout.split('\n\n').find((b) => /Description:\s+\[(?:stage-0 )?2\/2\] RUN/.test(b));
      expect(run, du.stdout).toBeDefined();
      expect(run).toMatch(/Type:\s+regular/);
      expect(run).toMatch(/Size:\s+3\d\d\.\d\dkB/);
      expect(run).toMatch(/Usage count:\s+1\n/);
      expect(du.stdout).not.toMatch(/Type:\s+content/);

      const kept = await runKiln(['prune', '-f', '--addr', daemon.addr, '--filter', 'type=regular', '--keep-duration', '1h']);
      expect(kept.stdout).toBe('Total:\t0B\n');
      const pruned = await runKiln(['prune', '--addr', daemon.addr, '-f', '--filter', 'type=regular', '--filter', 'description~=RUN']);
      expect(pruned.code, pruned.stderr).toBe(0);
      expect(pruned.stdout).toMatch(/^ID\s+RECLAIMABLE\s+SIZE\s+LAST ACCESSED\n/);
      expect(pruned.stdout).toMatch(/Total:\t3\d\d\.\d\dkB\n$/);
      const after = await runKiln(['du', '--addr', daemon.addr, '--verbose', '--filter', 'type=regular']);
      expect(after.stdout).not.toMatch(/Description:\s+\[(?:stage-0 )?2\/2\] RUN/);
      expect(after.stdout).toMatch(/Description:\s+\[(?:stage-0 )?1\/2\] COPY/);

      const again = await build();
      expect(again.code, again.stderr).toBe(0);
      expect(again.stderr).toMatch(/\[(?:stage-0 )?1\/2\] COPY[^\n]*\n#\d+ CACHED/);
      expect(again.stderr).toMatch(/\[(?:stage-0 )?2\/2\] RUN[^\n]*\n#\d+ DONE/);
    } finally {
      rmSync(ctx, { recursive: true, force: true });
    }
  }, 120_000);

  it('buildx flags: prune asks first (y/N on stdin), --max-used-space caps the cache, du --format json, history inspect --format json', async () => {
    const ctx = mkdtempSync(join(tmpdir(), 'kiln-du-flags-'));
    try {
      copyFileSync('/bin/busybox', join(ctx, 'busybox'));
      writeFileSync(join(ctx, 'Dockerfile'), ['FROM scratch', 'COPY --chmod=0755 busybox /bin/busybox', 'RUN ["/bin/busybox", "sh", "-c", "head -c 200000 /dev/urandom > /blob"]', ''].join('\n'));
      const build = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '--build-arg', 'X=1', ctx]);
      expect(build.code, build.stderr).toBe(0);
      const regular = async () =>
        (await runKiln(['du', '--addr', daemon.addr, '--format', 'json', '--filter', 'type=regular'])).stdout
          .trim()
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as { ID: string; Description: string; Reclaimable: boolean; Type: string; Size: string });
      const before = await regular();
      expect(before.find((r) => /RUN/.test(r.Description))).toMatchObject({ Reclaimable: true, Type: 'regular' });

      const prune = (args: string[], input: string) => spawnSync(kilnBin(), ['prune', '--addr', daemon.addr, ...args], { input, encoding: 'utf8', timeout: 60_000 });
      const declined = prune(['--filter', 'type=regular'], 'n\n');
      expect(declined.status).toBe(0);
      expect(declined.stdout).toBe('WARNING! This will remove all dangling build cache. Are you sure you want to continue? [y/N] ');
      expect((await regular()).length).toBe(before.length);
      // A cap of 1 byte: every unused record goes, oldest first.
      const capped = prune(['--filter', 'type=regular', '--max-used-space', '1'], 'y\n');
      expect(capped.status, capped.stderr).toBe(0);
      expect(capped.stdout).toMatch(/\[y\/N\] ID\s+RECLAIMABLE\s+SIZE\s+LAST ACCESSED\n/);
      expect(await regular()).toEqual([]);

      const history = await runKiln(['history', 'inspect', '--addr', daemon.addr, '--format', 'json']);
      expect(history.code, history.stderr).toBe(0);
      const rec = JSON.parse(history.stdout) as Record<string, unknown>;
      expect(rec).toMatchObject({ Dockerfile: 'Dockerfile', Status: 'completed', NumTotalSteps: expect.any(Number), BuildArgs: [{ Name: 'X', Value: '1' }], Config: {} });
      expect(Object.keys(rec)).toEqual(['Name', 'Ref', 'Dockerfile', 'StartedAt', 'CompletedAt', 'Duration', 'Status', 'NumCompletedSteps', 'NumTotalSteps', 'NumCachedSteps', 'BuildArgs', 'Config']);
    } finally {
      rmSync(ctx, { recursive: true, force: true });
    }
  }, 120_000);

  it('ListWorkers reports the GC policy from the daemon config', async () => {
    const client = createKilnClient(control.ControlService, createNodeTransport(daemon.addr));
    const { record } = await client.listWorkers({});
    expect(record[0]?.gcPolicy).toHaveLength(1);
    expect(record[0]?.gcPolicy[0]).toMatchObject({ all: false, keepDurationSeconds: 172_800n });
    const verbose = await runKiln(['workers', '--addr', daemon.addr, '--verbose']);
    expect(verbose.stdout).toMatch(/GC Policy rule#0:\n  All:\s+false\n  Keep Duration:\s+48h0m0s\n/);
  });
});
