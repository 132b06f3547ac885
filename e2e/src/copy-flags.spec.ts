import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startKilnd, type Kilnd, e2eWorker } from '@kiln/testkit';
import { localBuilds } from './local-builds.js';

/** Every path below `dir` (directories with a trailing slash), sorted. */
function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      out.push(relative(dir, p) + (e.isDirectory() ? '/' : ''));
      if (e.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out.sort();
}

describe(`COPY --parents and --link through kiln build [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let daemon: Kilnd;
  let ctx: string;
  beforeAll(async () => {
    daemon = await startKilnd();
    ctx = mkdtempSync(join(tmpdir(), 'kiln-copy-flags-'));
    for (const f of ['x/a.txt', 'x/skip.md', 'y/b.txt', 'y/sub/c.txt', 'src/lib/one.go', 'src/lib/deep/two.go', 'src/lib/readme.md', 'top.txt']) {
      mkdirSync(join(ctx, f, '..'), { recursive: true });
      writeFileSync(join(ctx, f), `${f}\n`);
    }
  }, 60_000);
  afterAll(async () => {
    await daemon?.stop();
    if (ctx) rmSync(ctx, { recursive: true, force: true });
    builds.cleanup();
  });

  const builds = localBuilds(() => daemon.addr, () => ctx);
  const build = builds.build;

  it('COPY --parents keeps the source directories, below the /./ pivot when given', async () => {
    const res = await build(['FROM scratch', 'COPY --parents ./x/a.txt ./y/ /dst/', 'COPY --parents ./src/./lib/**/*.go /go/', ''].join('\n'));
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-3000)}`).toBe(0);
    expect(tree(res.out)).toEqual([
      'dst/', 'dst/x/', 'dst/x/a.txt', 'dst/y/', 'dst/y/b.txt', 'dst/y/sub/', 'dst/y/sub/c.txt',
      'go/', 'go/lib/', 'go/lib/deep/', 'go/lib/deep/two.go', 'go/lib/one.go',
    ]);
    expect(readFileSync(join(res.out, 'go/lib/deep/two.go'), 'utf8')).toBe('src/lib/deep/two.go\n');
    rmSync(res.out, { recursive: true, force: true });
  }, 120_000);

  it('COPY --link layers the copy onto the stage, and its step stays cached when the layers below change', async () => {
    // The base differs only by a heredoc: the context (and so its content key) stays the same.
    const dockerfile = (version: string) =>
      ['FROM scratch AS base', `COPY <<EOF /data/base.txt\n${version}\nEOF`, 'COPY top.txt /data/top.txt', 'FROM base', 'COPY --link y/ /data/', 'ADD --link --chmod=0600 x/a.txt /data/top.txt', ''].join('\n');
    const first = await build(dockerfile('v1'));
    expect(first.code, `${first.stderr}\n${daemon.logs().slice(-3000)}`).toBe(0);
    expect(tree(first.out)).toEqual(['data/', 'data/b.txt', 'data/base.txt', 'data/sub/', 'data/sub/c.txt', 'data/top.txt']);
    expect(readFileSync(join(first.out, 'data/top.txt'), 'utf8')).toBe('x/a.txt\n');
    expect(statSync(join(first.out, 'data/top.txt')).mode & 0o777).toBe(0o600);
    rmSync(first.out, { recursive: true, force: true });

    const second = await build(dockerfile('v2'));
    expect(second.code, second.stderr).toBe(0);
    expect(readFileSync(join(second.out, 'data/base.txt'), 'utf8')).toBe('v2\n');
    expect(readFileSync(join(second.out, 'data/top.txt'), 'utf8')).toBe('x/a.txt\n');
    // The --link copies are cached (their keys do not include the base); the plain COPY after the heredoc is not.
    expect(second.stderr).toMatch(/#(\d+) \[stage-1 1\/2\] COPY --link y\/ \/data\/\n#\1 CACHED/);
    expect(second.stderr).toMatch(/#(\d+) \[stage-1 2\/2\] ADD --link [^\n]*top.txt\n#\1 CACHED/);
    expect(second.stderr).toMatch(/\[base 2\/2\] COPY top.txt \/data\/top.txt/);
    expect(second.stderr).not.toMatch(/#(\d+) \[base 2\/2\] COPY top.txt \/data\/top.txt\n#\1 CACHED/);
    rmSync(second.out, { recursive: true, force: true });
  }, 120_000);

  it('COPY --parents of a missing file fails naming the Dockerfile line', async () => {
    const res = await build('FROM scratch\nCOPY --parents ./x/nope.txt /dst/\n');
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/no such file or directory/);
    expect(res.stderr).toMatch(/Dockerfile\.\d+:2/);
  }, 120_000);
});
