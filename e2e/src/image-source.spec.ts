import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findRegistry, pushBusyboxImage, runKiln, startKilnd, startRegistry, type Kilnd, type TestRegistry, e2eWorker } from '@kiln/testkit';

const BUSYBOX = '/bin/busybox';

describe.skipIf(!findRegistry() || !existsSync(BUSYBOX))(`FROM an image in a registry [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let registry: TestRegistry;
  let daemon: Kilnd;
  let ctx: string;
  let imageRef: string;

  beforeAll(async () => {
    registry = await startRegistry();
    ctx = mkdtempSync(join(tmpdir(), 'kiln-image-source-'));
    imageRef = (await pushBusyboxImage(registry, ctx, 'kiln/busybox', '1', { applets: ['sh', 'echo', 'ls', 'cat'] })).ref;
    daemon = await startKilnd();
    writeFileSync(join(ctx, 'Dockerfile'), `FROM ${imageRef}\nRUN echo hi > /hi.txt\n`);
  }, 60_000);

  afterAll(async () => {
    await daemon?.stop();
    await registry?.stop();
    if (ctx) rmSync(ctx, { recursive: true, force: true });
  });

  it('pulls the base image and runs a step on it', async () => {
    const out = join(ctx, 'out');
    const res = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '-o', `type=local,dest=${out}`, ctx]);
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
    expect(readFileSync(join(out, 'hi.txt'), 'utf8')).toBe('hi\n');
    expect(statSync(join(out, 'bin', 'busybox')).isFile()).toBe(true);
    expect(res.stderr).toContain(`pulling ${imageRef}`);
  }, 60_000);

  it('fails a missing tag naming the reference', async () => {
    const bad = mkdtempSync(join(tmpdir(), 'kiln-image-source-bad-'));
    try {
      const missing = `${registry.host}/kiln/busybox:nope`;
      writeFileSync(join(bad, 'Dockerfile'), `FROM ${missing}\n`);
      const res = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '-o', `type=local,dest=${join(bad, 'out')}`, bad]);
      expect(res.code).toBe(1);
      expect(res.stderr).toContain(missing);
    } finally {
      rmSync(bad, { recursive: true, force: true });
    }
  }, 60_000);
});
