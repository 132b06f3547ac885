import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runKiln, startTopology, type KilnTopology, e2eWorker } from '@kiln/testkit';

// File outputs (`-o type=oci|tar,dest=FILE`) written by the exporter straight
// into the CLI's temp file when both see the same filesystem ("local write"),
// streamed through the session otherwise.

const has = (bin: string) => spawnSync('sh', ['-c', `command -v ${bin}`]).status === 0;
const LOCAL_WRITE_LOG = 'output written in place (local write)';

// split: the exporters tier is a process of its own (same host), reached by the CLI only through the solver.
const topologies = (['all-in-one', 'split'] as const).map((topology) => ({ topology, start: () => startTopology(topology) }));

describe.each(topologies)(`file outputs written in place by the exporter [topology=$topology, worker=${e2eWorker()}]`, (topology) => {
  let daemon: KilnTopology;
  let work: string;
  let ctx: string;
  const localWrites = () => daemon.logs().split(LOCAL_WRITE_LOG).length - 1;

  beforeAll(async () => {
    daemon = await topology.start();
    work = mkdtempSync(join(tmpdir(), 'kiln-e2e-local-write-'));
    ctx = join(work, 'ctx');
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'data.bin'), Buffer.alloc(3 << 20, 'kiln local write '));
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM scratch\nCOPY data.bin /data.bin\n');
  }, 120_000);

  afterAll(async () => {
    await daemon?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  const build = async (args: string[], env: NodeJS.ProcessEnv = {}) => {
    const res = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', ...args, ctx], { env: { ...env, ...daemon.env } });
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
  };
  /** No temp file is left next to the outputs. */
  const noTemps = (dir: string) => expect(readdirSync(dir).filter((n) => n.startsWith('.kiln-out-'))).toEqual([]);

  it.skipIf(!has('skopeo'))('type=oci,dest=FILE: the exporter writes the tarball in place; skopeo inspects it', async () => {
    const out = join(work, 'oci');
    const tarball = join(out, 'app.oci.tar');
    mkdirSync(out);
    writeFileSync(tarball, 'an older file, replaced');
    const before = localWrites();
    await build(['-o', `type=oci,dest=${tarball},name=kiln-e2e/local:1`]);
    expect(localWrites()).toBe(before + 1);
    const inspect = spawnSync('skopeo', ['inspect', `oci-archive:${tarball}`], { encoding: 'utf8' });
    expect(inspect.status, inspect.stderr).toBe(0);
    expect((JSON.parse(inspect.stdout) as { Layers: string[] }).Layers).toHaveLength(1);
    noTemps(out);
  }, 120_000);

  it('KILN_LOCAL_WRITE=0 streams instead; both ways give the same bytes', async () => {
    const out = join(work, 'tar');
    const local = join(out, 'local.tar');
    const streamed = join(out, 'streamed.tar');
    const before = localWrites();
    await build(['-o', `type=tar,dest=${local}`]);
    expect(localWrites()).toBe(before + 1);
    await build(['-o', `type=tar,dest=${streamed}`], { KILN_LOCAL_WRITE: '0' });
    expect(localWrites()).toBe(before + 1);
    const bytes = readFileSync(local);
    expect(bytes.length).toBeGreaterThan(3 << 20);
    expect(readFileSync(streamed).equals(bytes)).toBe(true);
    noTemps(out);
  }, 120_000);

  it('dest=- is always streamed', async () => {
    const before = localWrites();
    const res = await runKiln(['build', '--addr', daemon.addr, '--progress=quiet', '-o', 'type=tar,dest=-', ctx], { env: daemon.env });
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout.length).toBeGreaterThan(3 << 20);
    expect(localWrites()).toBe(before);
  }, 120_000);
});
