// Issue 12, hole 7: hostile input must neither crash the daemon nor reach
// the terminal raw. A Dockerfile of 5,000 chained steps used to fail with
// "Maximum call stack size exceeded" (recursive graph walks in the
// frontend, LLB and the solver); a Dockerfile full of ESC sequences had its
// bytes echoed to the user's terminal (cursor moves, window title, OSC 52
// clipboard writes).
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runKiln, startKilnd, type Kilnd, e2eWorker } from '@kiln/testkit';

// eslint-disable-next-line no-control-regex
const RAW_CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/;

describe(`hostile Dockerfiles [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let daemon: Kilnd;
  let work: string;

  const ctx = (name: string, dockerfile: string, files: Record<string, string> = {}) => {
    const dir = join(work, name);
    mkdirSync(dir);
    writeFileSync(join(dir, 'Dockerfile'), dockerfile);
    for (const [f, text] of Object.entries(files)) writeFileSync(join(dir, f), text);
    return dir;
  };
  const build = (dir: string, extra: string[] = []) =>
    runKiln(['build', '--addr', daemon.addr, '--progress=plain', ...extra, dir], { timeoutMs: 240_000 });

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'kiln-hostile-e2e-'));
    daemon = await startKilnd();
  }, 60_000);

  afterAll(async () => {
    await daemon?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('solves a 5,000-step chain to the step that fails, naming its line, and keeps serving', async () => {
    // Every step after the first depends on the one before: the whole chain is
    // converted, marshalled, validated and scheduled before the first step fails.
    const steps = Array.from({ length: 5000 }, (_, i) => `COPY f /f${i}\n`).join('');
    const dir = ctx('long-chain', `FROM scratch\nCOPY missing.txt /m\n${steps}`, { f: 'f\n' });
    const started = Date.now();
    const res = await build(dir);
    const ms = Date.now() - started;
    expect(res.code, `${res.stderr.slice(-3000)}\n${daemon.logs().slice(-3000)}`).toBe(1);
    expect(res.stderr).not.toContain('Maximum call stack size exceeded');
    expect(res.stderr).toMatch(/ERROR: .*missing\.txt.*\(Dockerfile:2\)/s);
    console.log(`5,000-step chain: converted, scheduled and failed at step 1 in ${ms} ms`);

    // The daemon survived and still builds.
    const ok = await build(ctx('after', 'FROM scratch\nCOPY f /f\n', { f: 'ok\n' }));
    expect(ok.code, ok.stderr).toBe(0);
  }, 300_000);

  it('converts and builds 5,000 chained stages', async () => {
    const stages = Array.from({ length: 5000 }, (_, i) => `FROM s${i} AS s${i + 1}\n`).join('');
    const dir = ctx('long-stages', `FROM scratch AS s0\nCOPY f /f\n${stages}`, { f: 'f\n' });
    const res = await build(dir, ['--output', `type=local,dest=${join(work, 'stages-out')}`]);
    expect(res.code, `${res.stderr.slice(-3000)}\n${daemon.logs().slice(-3000)}`).toBe(0);
    expect(readdirSync(join(work, 'stages-out'))).toEqual(['f']);
  }, 300_000);

  it('never writes a control byte from the Dockerfile to the terminal', async () => {
    const esc = '\x1b[2J\x1b]0;pwned\x07\x1b]52;c;cHduZWQ=\x07\x9b31m';
    // A step whose name carries the bytes (plain progress prints it; `[` makes the source a
    // wildcard that matches nothing, so the step succeeds), then a garbage instruction.
    const named = await build(ctx('esc-step', `FROM scratch\nCOPY missing${esc} /x\n`));
    expect(named.code, named.stderr).toBe(0);
    expect(named.stderr).not.toMatch(RAW_CONTROL);
    expect(named.stderr).toContain('missing\\x1b[2J\\x1b]0;pwned\\x07');

    const garbage = await build(ctx('esc-garbage', `FROM scratch\n${esc}garbage\n`));
    expect(garbage.code).toBe(1);
    expect(garbage.stderr).not.toMatch(RAW_CONTROL);
    expect(garbage.stderr).toContain('\\x1b]52;c;cHduZWQ=\\x07');
    expect(garbage.stdout).not.toMatch(RAW_CONTROL);
  }, 120_000);

});
