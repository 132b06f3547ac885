import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findRegistry, freePort, pushBusyboxImage, runKiln, startKilnd, type Kilnd, startRegistry, type TestRegistry, e2eWorker } from '@kiln/testkit';

const BUSYBOX = '/bin/busybox';
const GIT_DAEMON = '/usr/lib/git-core/git-daemon';

/** A git repository served by `git daemon` on 127.0.0.1 (the git:// protocol). */
async function serveRepo(root: string): Promise<{ url: string; tagCommit: string; stop: () => void }> {
  const repo = join(root, 'repo.git');
  const work = join(root, 'work');
  mkdirSync(join(work, 'docs'), { recursive: true });
  const git = (args: string[], cwd = work) => execFileSync('git', ['-c', 'user.name=kiln', '-c', 'user.email=kiln@example.com', ...args], { cwd, encoding: 'utf8' }).trim();
  git(['init', '-q', '-b', 'main']);
  writeFileSync(join(work, 'README.md'), 'v1\n');
  writeFileSync(join(work, 'docs', 'guide.md'), '# guide v1\n');
  git(['add', '.']);
  git(['commit', '-q', '-m', 'v1']);
  git(['tag', 'v1']);
  const tagCommit = git(['rev-parse', 'HEAD']);
  writeFileSync(join(work, 'README.md'), 'v2\n');
  git(['commit', '-q', '-am', 'v2']);
  execFileSync('git', ['clone', '-q', '--bare', work, repo]);
  const port = await freePort();
  const proc: ChildProcess = spawn(GIT_DAEMON, ['--reuseaddr', '--export-all', '--listen=127.0.0.1', `--port=${port}`, `--base-path=${root}`, root], { stdio: 'ignore' });
  // Wait until the daemon answers.
  for (let i = 0; i < 50; i++) {
    try {
      execFileSync('git', ['ls-remote', `git://127.0.0.1:${port}/repo.git`], { stdio: 'ignore' });
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return { url: `git://127.0.0.1:${port}/repo.git`, tagCommit, stop: () => proc.kill() };
}

describe.skipIf(!existsSync(GIT_DAEMON))(`ADD from a git repository [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let daemon: Kilnd;
  let root: string;
  let repo: Awaited<ReturnType<typeof serveRepo>>;
  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'kiln-add-git-'));
    repo = await serveRepo(join(root, 'served'));
    daemon = await startKilnd();
  }, 60_000);
  afterAll(async () => {
    await daemon?.stop();
    repo?.stop();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  async function build(name: string, dockerfile: string) {
    const ctx = join(root, name);
    mkdirSync(ctx, { recursive: true });
    writeFileSync(join(ctx, 'Dockerfile'), dockerfile);
    const out = join(ctx, 'out');
    const res = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '-o', `type=local,dest=${out}`, ctx]);
    return { res, out };
  }

  it('checks out #ref:subdir, keeps .git only with --keep-git-dir, and verifies --checksum against the commit', async () => {
    const { res, out } = await build(
      'ok',
      [
        'FROM scratch',
        `ADD ${repo.url}#v1:docs /docs/`,
        `ADD --keep-git-dir ${repo.url}#main /main/`,
        `ADD ${repo.url}#v1 /v1/`,
        `ADD --checksum=${repo.tagCommit} ${repo.url}#v1 /pinned/`,
      ].join('\n'),
    );
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
    expect(readFileSync(join(out, 'docs', 'guide.md'), 'utf8')).toBe('# guide v1\n');
    expect(existsSync(join(out, 'docs', 'README.md'))).toBe(false);
    expect(readFileSync(join(out, 'main', 'README.md'), 'utf8')).toBe('v2\n');
    expect(existsSync(join(out, 'main', '.git', 'HEAD'))).toBe(true);
    expect(readFileSync(join(out, 'v1', 'README.md'), 'utf8')).toBe('v1\n');
    expect(existsSync(join(out, 'v1', '.git'))).toBe(false);
    expect(readFileSync(join(out, 'pinned', 'README.md'), 'utf8')).toBe('v1\n');
  }, 120_000);

  it('fails when --checksum does not match the fetched commit', async () => {
    const wrong = repo.tagCommit.startsWith('0') ? '1'.repeat(40) : '0'.repeat(40);
    const { res } = await build('bad', `FROM scratch\nADD --checksum=${wrong} ${repo.url}#v1 /pinned/\n`);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain(`expected checksum to match ${wrong}, got ${repo.tagCommit}`);
  }, 120_000);
});

describe.skipIf(!findRegistry() || !existsSync(BUSYBOX))(`ONBUILD triggers run in the build that uses the image [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let registry: TestRegistry;
  let daemon: Kilnd;
  let ctx: string;
  let busybox: string;
  beforeAll(async () => {
    registry = await startRegistry();
    ctx = mkdtempSync(join(tmpdir(), 'kiln-onbuild-'));
    busybox = (await pushBusyboxImage(registry, ctx, 'kiln/busybox', '1', { applets: ['sh', 'echo', 'cat'] })).ref;
    daemon = await startKilnd();
  }, 60_000);
  afterAll(async () => {
    await daemon?.stop();
    await registry?.stop();
    if (ctx) rmSync(ctx, { recursive: true, force: true });
  });

  it('records triggers in the base image and runs them, reading the child build context', async () => {
    const base = join(ctx, 'base');
    mkdirSync(base);
    writeFileSync(join(base, 'Dockerfile'), `FROM ${busybox}\nONBUILD COPY marker.txt /marker.txt\nONBUILD RUN echo "triggered in $(cat /marker.txt)" > /triggered\nRUN echo base > /base\n`);
    const ref = `${registry.host}/kiln/onbuild:1`;
    const pushed = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '-o', `type=image,name=${ref},push=true`, base]);
    expect(pushed.code, `${pushed.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
    // The base build itself does not run its own triggers (it has no marker.txt).

    const child = join(ctx, 'child');
    mkdirSync(child);
    writeFileSync(join(child, 'marker.txt'), 'the child');
    writeFileSync(join(child, 'Dockerfile'), `FROM ${ref}\nRUN cat /triggered > /seen\n`);
    const out = join(child, 'out');
    const res = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '-o', `type=local,dest=${out}`, child]);
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
    expect(readFileSync(join(out, 'base'), 'utf8')).toBe('base\n');
    expect(readFileSync(join(out, 'seen'), 'utf8')).toBe('triggered in the child\n');
    // BuildKit's numbering: FROM is step 1, the triggers come next as steps of their own.
    expect(res.stderr).toMatch(/\[2\/4\] ONBUILD COPY marker.txt \/marker.txt/);
  }, 180_000);
});

describe(`COPY and ADD --exclude with ! exceptions [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let daemon: Kilnd;
  let ctx: string;
  beforeAll(async () => {
    daemon = await startKilnd();
    ctx = mkdtempSync(join(tmpdir(), 'kiln-exclude-'));
    mkdirSync(join(ctx, 'docs', 'keep'), { recursive: true });
    for (const f of ['docs/a.md', 'docs/b.md', 'docs/KEEP.md', 'docs/notes.txt', 'docs/keep/c.md']) writeFileSync(join(ctx, f), f);
  }, 60_000);
  afterAll(async () => {
    await daemon?.stop();
    if (ctx) rmSync(ctx, { recursive: true, force: true });
  });

  it('leaves out the excluded files but keeps the ! exceptions (paths relative to the source), in order', async () => {
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM scratch\nCOPY --exclude=**/*.md --exclude=!**/KEEP.md --exclude=!keep docs /c/\nADD --exclude=*.txt docs /a/\n');
    const out = join(ctx, 'out');
    const res = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '-o', `type=local,dest=${out}`, ctx]);
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
    const list = (dir: string): string[] => execFileSync('find', [dir, '-type', 'f', '-printf', '%P\n'], { encoding: 'utf8' }).split('\n').filter(Boolean).sort();
    expect(list(join(out, 'c'))).toEqual(['KEEP.md', 'keep/c.md', 'notes.txt']);
    expect(list(join(out, 'a'))).toEqual(['KEEP.md', 'a.md', 'b.md', 'keep/c.md']);
  }, 120_000);
});
