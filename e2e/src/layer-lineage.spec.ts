import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findRegistry, pushBusyboxImage, runKiln, startKilnd, startRegistry, type Kilnd, type TestRegistry, e2eWorker } from '@kiln/testkit';

const has = (bin: string) => spawnSync('sh', ['-c', `command -v ${bin}`]).status === 0;
const canRun = process.getuid?.() === 0 && !!findRegistry() && has('skopeo') && has('runc');

function skopeo(...args: string[]): unknown {
  const r = spawnSync('skopeo', args, { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`skopeo ${args.join(' ')}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

interface Exported {
  manifest: string;
  layers: string[];
  diffIds: string[];
  history: { created_by?: string; empty_layer?: boolean }[];
}

/** What skopeo reads from an OCI archive: manifest digest, layer digests, the config's diff ids and history. */
function inspect(tarball: string): Exported {
  const info = skopeo('inspect', `oci-archive:${tarball}`) as { Digest: string; Layers: string[] };
  const config = skopeo('inspect', '--config', `oci-archive:${tarball}`) as { rootfs: { diff_ids: string[] }; history: Exported['history'] };
  return { manifest: info.Digest, layers: info.Layers, diffIds: config.rootfs.diff_ids, history: config.history };
}

/**
 * An image built from cached steps after a daemon restart must keep one
 * layer per step: the worker's record of which snapshot sits on which
 * (its layer lineage) has to survive the restart with the refs.
 */
describe.skipIf(!canRun)(`layers of cached steps across a daemon restart [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let registry: TestRegistry;
  let daemon: Kilnd | undefined;
  let work: string;
  let root: string;
  let ctx: string;

  beforeAll(async () => {
    registry = await startRegistry();
    work = mkdtempSync(join(tmpdir(), 'kiln-lineage-e2e-'));
    root = join(work, 'root');
    const base = (await pushBusyboxImage(registry, work, 'kiln/lineage-base', '1')).ref;
    ctx = join(work, 'ctx');
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'a.txt'), 'copied\n');
    writeFileSync(join(ctx, 'Dockerfile'), `FROM ${base}\nRUN echo one > /one\nCOPY a.txt /a.txt\nRUN echo two > /two\n`);
  }, 60_000);

  afterAll(async () => {
    await daemon?.stop();
    await registry?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  /** Exec ops the daemon ran, from its debug log. */
  const execRuns = (logs: string) => logs.split('\n').filter((l) => l.includes('"msg":"running op"') && l.includes('"kind":"exec"')).length;

  const build = async (name: string): Promise<{ out: Exported; stderr: string }> => {
    const tarball = join(work, `${name}.tar`);
    const res = await runKiln(['build', '--addr', daemon!.addr, '--progress=plain', '-o', `type=oci,dest=${tarball},name=kiln-e2e/lineage:1`, ctx]);
    expect(res.code, `${res.stderr}\n${daemon!.logs().slice(-4000)}`).toBe(0);
    return { out: inspect(tarball), stderr: res.stderr };
  };

  it('exports the same layers (one per step) and manifest from a fully cached build after the daemon restarts on the same root', async () => {
    daemon = await startKilnd({ root });
    const first = (await build('first')).out;
    // The base layer, then one per RUN/COPY step.
    expect(first.layers).toHaveLength(4);
    expect(first.history.filter((h) => !h.empty_layer)).toHaveLength(4);
    await daemon.stop();

    daemon = await startKilnd({ root });
    const again = await build('after-restart');
    // Every step came from the cache (nothing ran again)...
    expect(execRuns(daemon.logs())).toBe(0);
    // ...and the image is the same one, layer for layer.
    expect(again.out.layers).toEqual(first.layers);
    expect(again.out.diffIds).toEqual(first.diffIds);
    expect(again.out.history.map((h) => !!h.empty_layer)).toEqual(first.history.map((h) => !!h.empty_layer));
    expect(again.out.manifest).toBe(first.manifest);
  }, 120_000);
});
