import { copyFileSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runKiln, startKilnd, type Kilnd, e2eWorker } from '@kiln/testkit';

// A base with no registry: Debian's static busybox copied in from the context.
const BUSYBOX = '/bin/busybox';

/**
 * Hole 1 of the security issue (CVE-2024-23652's class): a step swaps a
 * parent of one of its mount points for a symlink to a host directory, so
 * that the worker's clean-up of the mount-point stubs after the step (or any
 * other host-side file operation on the rootfs) acts on the host instead.
 * The canary directories mirror the stub paths; each must survive intact.
 */
describe(`a step cannot make the worker touch host paths through symlinks in its rootfs [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let daemon: Kilnd;
  let dir: string;

  const listTree = (root: string, rel = ''): string[] =>
    readdirSync(join(root, rel))
      .sort()
      .flatMap((n) => {
        const r = rel ? `${rel}/${n}` : n;
        const st = lstatSync(join(root, r));
        const kind = st.isDirectory() ? 'dir' : st.isFile() ? `file(${st.size})` : 'other';
        return [`${r} ${kind}`, ...(st.isDirectory() ? listTree(root, r) : [])];
      });

  /**
   * A fresh build context with busybox and a host canary directory, one
   * subdirectory per stub kind shaped like the stub path below the swapped
   * parent: empty directories and empty files are exactly what a stub
   * clean-up removes. `before` lists the canary as made.
   */
  const setUp = (name: string) => {
    const ctx = mkdtempSync(join(dir, `${name}-`));
    const canary = join(ctx, 'canary');
    for (const kind of ['tmpfs', 'cache', 'bind']) mkdirSync(join(canary, kind, 'etc', 'f'), { recursive: true });
    mkdirSync(join(canary, 'secret', 'etc'), { recursive: true });
    writeFileSync(join(canary, 'secret', 'etc', 'f'), '');
    mkdirSync(join(canary, 'hosts'), { recursive: true });
    writeFileSync(join(canary, 'hosts', 'hosts'), '');
    // A host passwd file a symlinked /etc/passwd points at.
    writeFileSync(join(canary, 'passwd'), 'hostonly:x:4242:4242::/:/bin/sh\n');
    copyFileSync(BUSYBOX, join(ctx, 'busybox'));
    writeFileSync(join(ctx, 'secret.txt'), 's3cret');
    // Only the Dockerfile and busybox are the context: the canary is the host's.
    writeFileSync(join(ctx, '.dockerignore'), 'canary\nout\n');
    return { ctx, canary, before: listTree(canary) };
  };

  beforeAll(async () => {
    daemon = await startKilnd();
    dir = mkdtempSync(join(tmpdir(), 'kiln-rootfs-symlink-'));
  }, 60_000);
  afterAll(async () => {
    await daemon?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const build = (ctx: string, dockerfile: string, extra: string[] = []) => {
    writeFileSync(join(ctx, 'Dockerfile'), dockerfile);
    return runKiln(['build', '--addr', daemon.addr, '--progress=plain', ...extra, '-o', `type=local,dest=${join(ctx, 'out')}`, ctx]);
  };

  it('leaves the host alone when a step swaps the parent of a tmpfs, secret, cache, bind or /etc/hosts mount point for a symlink', async () => {
    const { ctx, canary, before } = setUp('stubs');
    const swap = (from: string, to: string) => `sh -c 'mv ${from} ${from}.old && ln -s ${to} ${from}'`;
    const res = await build(
      ctx,
      [
        'FROM scratch',
        'COPY --chmod=0755 busybox /bin/busybox',
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]',
        `RUN --mount=type=tmpfs,target=/t/etc/f ${swap('/t', `${canary}/tmpfs`)}`,
        `RUN --mount=type=secret,id=s,target=/s/etc/f ${swap('/s', `${canary}/secret`)}`,
        `RUN --mount=type=cache,id=rootfs-symlink,target=/c/etc/f ${swap('/c', `${canary}/cache`)}`,
        `RUN --mount=type=bind,source=secret.txt,target=/b/etc/f ${swap('/b', `${canary}/bind`)}`,
        // /etc is missing in this image: /etc and /etc/hosts are stubs of the hosts mount.
        `RUN ${swap('/etc', `${canary}/hosts`)}`,
        'RUN echo done > /done',
        '',
      ].join('\n'),
      ['--secret', `id=s,src=${join(ctx, 'secret.txt')}`],
    );
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
    expect(listTree(canary)).toEqual(before);
    // The build itself is what the steps made: the symlinks as written, the moved trees kept.
    const out = join(ctx, 'out');
    for (const [link, kind] of [['t', 'tmpfs'], ['s', 'secret'], ['c', 'cache'], ['b', 'bind'], ['etc', 'hosts']]) {
      expect(readlinkSync(join(out, link!))).toBe(`${canary}/${kind}`);
      expect(lstatSync(join(out, `${link}.old`)).isDirectory()).toBe(true);
    }
    expect(readFileSync(join(out, 'done'), 'utf8')).toBe('done\n');
    // No secret bytes were committed anywhere a stub was.
    expect(readFileSync(join(out, 's.old', 'etc', 'f'), 'utf8')).toBe('');
  });

  it('looks a USER up in the rootfs /etc/passwd, never in the host file a symlink names', async () => {
    const { ctx, canary, before } = setUp('user');
    const res = await build(
      ctx,
      [
        'FROM scratch',
        'COPY --chmod=0755 busybox /bin/busybox',
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]',
        `RUN mkdir -p /etc && ln -s ${canary}/passwd /etc/passwd`,
        'USER hostonly',
        'RUN id -u > /uid',
        '',
      ].join('\n'),
    );
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/unable to find user hostonly/);
    expect(listTree(canary)).toEqual(before);
  });

  it('creates a WORKDIR through a symlinked parent inside the rootfs, not on the host', async () => {
    const { ctx, canary, before } = setUp('workdir');
    const res = await build(
      ctx,
      [
        'FROM scratch',
        'COPY --chmod=0755 busybox /bin/busybox',
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]',
        `RUN ln -s ${canary}/made /w`,
        'WORKDIR /w/sub',
        'RUN pwd > /pwd',
        '',
      ].join('\n'),
    );
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
    expect(listTree(canary)).toEqual(before);
    const out = join(ctx, 'out');
    // The directory landed where the symlink points inside the rootfs (the step's cwd, physically).
    expect(readFileSync(join(out, 'pwd'), 'utf8')).toBe(`${canary}/made/sub\n`);
    expect(lstatSync(join(out, canary.slice(1), 'made', 'sub')).isDirectory()).toBe(true);
  });
});
