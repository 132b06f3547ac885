import { mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runKiln, startKilnd, type Kilnd, e2eWorker } from '@kiln/testkit';

const FILES = 2000;
const FILE_BYTES = 1024;

/**
 * The worker's "context diff applied" / "context unchanged" debug lines (what
 * each transfer received), oldest first; `reused` when nothing changed and
 * the previous copy was the result.
 */
function transfers(logs: string): { changed: number; deleted: number; contentBytes: number; bytes: number; reused?: boolean }[] {
  return logs
    .split('\n')
    .filter((l) => l.includes('"msg":"context diff applied"') || l.includes('"msg":"context unchanged: previous copy reused"'))
    .map((l) => {
      const rec = JSON.parse(l) as { msg: string; changed: number; deleted: number; contentBytes: number; bytes: number };
      return rec.msg.startsWith('context unchanged') ? { changed: 0, deleted: 0, contentBytes: 0, bytes: rec.bytes, reused: true } : rec;
    });
}

describe(`incremental context transfer [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let root: string;
  let ctx: string;
  let daemon: Kilnd;
  let n = 0;

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'kiln-ctx-root-'));
    ctx = mkdtempSync(join(tmpdir(), 'kiln-ctx-'));
    for (let d = 0; d < FILES / 100; d++) {
      mkdirSync(join(ctx, 'files', `d${d}`), { recursive: true });
      for (let f = 0; f < 100; f++) writeFileSync(join(ctx, 'files', `d${d}`, `f${f}.txt`), Buffer.alloc(FILE_BYTES, 97 + (f % 26)));
    }
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM scratch\nCOPY files /files\n');
    daemon = await startKilnd({ root });
  });
  afterAll(async () => {
    await daemon?.stop();
    rmSync(root, { recursive: true, force: true });
    rmSync(ctx, { recursive: true, force: true });
  });

  async function build(): Promise<{ stderr: string; out: string; transfer: ReturnType<typeof transfers>[number] }> {
    const out = join(ctx, '..', `${ctx.split('/').pop()}-out-${++n}`);
    const before = transfers(daemon.logs()).length;
    const res = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '-o', `type=local,dest=${out}`, ctx]);
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
    const after = transfers(daemon.logs());
    // One transfer of the context per build (the Dockerfile travels by ReadFile).
    expect(after.length - before).toBe(1);
    return { stderr: res.stderr, out, transfer: after.at(-1)! };
  }

  it('sends only the changed file of 2,000 on a rebuild; a touched file keeps the cache', async () => {
    const first = await build();
    expect(first.transfer.contentBytes).toBe(FILES * FILE_BYTES);
    rmSync(first.out, { recursive: true, force: true });

    writeFileSync(join(ctx, 'files/d7/f3.txt'), 'changed\n');
    const second = await build();
    expect(second.transfer).toMatchObject({ changed: 1, deleted: 0, contentBytes: 8 });
    expect(second.transfer.bytes).toBeLessThan(1024);
    expect(readFileSync(join(second.out, 'files/d7/f3.txt'), 'utf8')).toBe('changed\n');
    expect(readFileSync(join(second.out, 'files/d7/f4.txt'))).toEqual(Buffer.alloc(FILE_BYTES, 97 + 4));
    expect(second.stderr).not.toMatch(/COPY files \/files\n#\d+ CACHED/);
    rmSync(second.out, { recursive: true, force: true });

    utimesSync(join(ctx, 'files/d1/f1.txt'), 1_000_000, 1_000_000);
    const touched = await build();
    expect(touched.transfer).toMatchObject({ changed: 1, deleted: 0, contentBytes: FILE_BYTES });
    expect(touched.stderr).toMatch(/COPY files \/files\n#\d+ CACHED/);
    rmSync(touched.out, { recursive: true, force: true });

    // Nothing changed: no new snapshot, the previous copy is the result (twice, so the
    // first build's release of it must not remove the copy the second one uses).
    for (let i = 0; i < 2; i++) {
      const same = await build();
      expect(same.transfer).toMatchObject({ reused: true });
      expect(same.stderr).toMatch(/COPY files \/files\n#\d+ CACHED/);
      expect(readFileSync(join(same.out, 'files/d7/f3.txt'), 'utf8')).toBe('changed\n');
      rmSync(same.out, { recursive: true, force: true });
    }
    writeFileSync(join(ctx, 'files/d0/f0.txt'), 'again\n');
    const after = await build();
    expect(after.transfer).toMatchObject({ changed: 1, deleted: 0, contentBytes: 6 });
    expect(readFileSync(join(after.out, 'files/d0/f0.txt'), 'utf8')).toBe('again\n');
    expect(readFileSync(join(after.out, 'files/d7/f3.txt'), 'utf8')).toBe('changed\n');
    rmSync(after.out, { recursive: true, force: true });
  }, 180_000);
});
