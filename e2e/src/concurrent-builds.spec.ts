import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushBusyboxImage, runKiln, startKilnd, startRegistry, type Kilnd, type TestRegistry, e2eWorker } from '@kiln/testkit';

const SHARED_RUN = 'RUN sleep 1 && echo SHARED-STEP-MARKER && cat /proc/sys/kernel/random/uuid > /token';

/** The progress block of the step named `name`: its lines, from the `#N name` line to the step's end. */
function stepLines(progress: string, name: string): string[] {
  const id = new RegExp(`^#(\\d+) \\[\\d+/\\d+\\] ${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm').exec(progress)?.[1];
  if (!id) return [];
  return progress.split('\n').filter((l) => l.startsWith(`#${id} `));
}

describe(`concurrent builds of different projects sharing a base [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let registry: TestRegistry;
  let daemon: Kilnd;
  let work: string;
  let base: string;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'kiln-concurrent-'));
    registry = await startRegistry();
    base = (await pushBusyboxImage(registry, work, 'concurrent/base', 'v1', { applets: ['sh', 'sleep', 'echo', 'cat'], dirs: ['proc'] })).ref;
    daemon = await startKilnd();
  });
  afterAll(async () => {
    await daemon?.stop();
    await registry?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('runs the shared slow RUN once, and every build shows it in its progress and history', async () => {
    const projects = ['one', 'two', 'three'].map((name) => {
      const dir = join(work, name);
      mkdirSync(dir);
      writeFileSync(join(dir, 'own.txt'), `${name}\n`);
      writeFileSync(join(dir, 'Dockerfile'), `FROM ${base}\n${SHARED_RUN}\nCOPY own.txt /own.txt\n`);
      return { name, dir };
    });
    const results = await Promise.all(
      projects.map((p) =>
        runKiln(['build', '--addr', daemon.addr, '--progress=plain', '--metadata-file', join(p.dir, 'meta.json'), '-o', `type=local,dest=${join(p.dir, 'out')}`, p.dir]),
      ),
    );
    for (const r of results) expect(r.code, `${r.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);

    // One run: the same token in every result, the step's output in one build's progress only.
    const tokens = new Set(projects.map((p) => readFileSync(join(p.dir, 'out', 'token'), 'utf8')));
    expect(tokens.size).toBe(1);
    expect(results.map((r) => (r.stderr.match(/^#\d+ \d+\.\d+ SHARED-STEP-MARKER$/gm) ?? []).length).sort()).toEqual([0, 0, 1]);
    for (const p of projects) expect(readFileSync(join(p.dir, 'out', 'own.txt'), 'utf8')).toBe(`${p.name}\n`);

    // Every build shows the base and the shared step: run by one, taken from it (CACHED) by the others.
    const ends = results.map((r) => stepLines(r.stderr, SHARED_RUN).at(-1) ?? `(no step "${SHARED_RUN}" in)\n${r.stderr}`);
    expect(ends.filter((l) => /^#\d+ DONE /.test(l)), ends.join('\n')).toHaveLength(1);
    expect(ends.filter((l) => /^#\d+ CACHED$/.test(l)), ends.join('\n')).toHaveLength(2);
    for (const r of results) expect(stepLines(r.stderr, `FROM ${base}`).length, r.stderr).toBeGreaterThan(0);

    // And their history records count it: the same steps in each.
    const records: { NumTotalSteps: number; NumCompletedSteps: number }[] = [];
    for (const p of projects) {
      const ref = (JSON.parse(readFileSync(join(p.dir, 'meta.json'), 'utf8')) as Record<string, string>)['buildx.build.ref']!.split('/').pop()!;
      const inspect = await runKiln(['history', 'inspect', '--addr', daemon.addr, '--format', 'json', ref]);
      expect(inspect.code, inspect.stderr).toBe(0);
      records.push(JSON.parse(inspect.stdout) as (typeof records)[number]);
    }
    expect(new Set(records.map((r) => r.NumTotalSteps)).size, JSON.stringify(records)).toBe(1);
    for (const r of records) expect(r.NumCompletedSteps).toBe(r.NumTotalSteps);
  }, 60_000);
});
