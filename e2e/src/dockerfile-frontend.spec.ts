import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runKiln, startKilnd, type Kilnd, e2eWorker } from '@kiln/testkit';

const BUSYBOX = '/bin/busybox';
const HOST_ARCH = process.arch === 'x64' ? 'amd64' : process.arch;

const DOCKERFILE = `# syntax=docker/dockerfile:1
ARG VERSION=dev
FROM scratch as base
COPY --chmod=0755 busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]

FROM base AS build
ARG VERSION
ARG TARGETPLATFORM
ARG TARGETARCH
ADD assets.tar.gz /assets/
RUN echo "$VERSION $TARGETPLATFORM $TARGETARCH" > /build-info && ls /assets/docs > /listing

FROM scratch AS release
COPY --from=build /build-info /listing /
COPY --from=build /assets/ /assets/
COPY --from=1 /bin/busybox /bin/busybox

FROM release AS debug
COPY not-in-context.txt /never-read.txt
`;

describe(`Dockerfile frontend through kiln build [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let daemon: Kilnd;
  let ctx: string;
  beforeAll(async () => {
    daemon = await startKilnd();
    ctx = mkdtempSync(join(tmpdir(), 'kiln-dockerfile-e2e-'));
    copyFileSync(BUSYBOX, join(ctx, 'busybox'));
    const tree = join(ctx, 'tree');
    mkdirSync(join(tree, 'docs'), { recursive: true });
    writeFileSync(join(tree, 'docs', 'a.md'), '# A\n');
    writeFileSync(join(tree, 'docs', 'b.md'), '# B\n');
    execFileSync('tar', ['-C', tree, '-czf', join(ctx, 'assets.tar.gz'), 'docs']);
    rmSync(tree, { recursive: true });
    writeFileSync(join(ctx, 'Dockerfile'), DOCKERFILE);
  }, 60_000);
  afterAll(async () => {
    await daemon?.stop();
    if (ctx) rmSync(ctx, { recursive: true, force: true });
  });

  it('builds the target stage with build args, platform args, an unpacked local tar and COPY --from; prints build checks', async () => {
    const out = join(ctx, 'out.tar');
    const res = await runKiln([
      'build', '--addr', daemon.addr, '--progress=plain', '--target', 'release', '--platform', `linux/${HOST_ARCH}`,
      '--build-arg', 'VERSION=1.2.3', '-o', `type=tar,dest=${out}`, ctx,
    ]);
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
    expect(res.stderr).toMatch(/FromAsCasing: 'as' and 'FROM' keywords' casing do not match \(Dockerfile:3\)/);

    const names = execFileSync('tar', ['-tf', out], { encoding: 'utf8' }).split('\n').filter(Boolean).map((n) => n.replace(/^\.\//, ''));
    expect(names).toEqual(expect.arrayContaining(['build-info', 'listing', 'assets/docs/a.md', 'assets/docs/b.md', 'bin/busybox']));
    expect(names.some((n) => n.includes('never-read'))).toBe(false);
    const file = (name: string) => execFileSync('tar', ['-xOf', out, name], { encoding: 'utf8' });
    expect(file('build-info')).toBe(`1.2.3 linux/${HOST_ARCH} ${HOST_ARCH}\n`);
    expect(file('listing')).toBe('a.md\nb.md\n');
    expect(file('assets/docs/b.md')).toBe('# B\n');
  });

  it('reads a --build-context directory through the session for COPY --from and RUN --mount', async () => {
    const extra = mkdtempSync(join(tmpdir(), 'kiln-dockerfile-extra-'));
    const dir = mkdtempSync(join(tmpdir(), 'kiln-dockerfile-named-'));
    writeFileSync(join(extra, 'logo.txt'), 'logo\n');
    copyFileSync(BUSYBOX, join(dir, 'busybox'));
    writeFileSync(
      join(dir, 'Dockerfile'),
      'FROM scratch\nCOPY --chmod=0755 busybox /bin/busybox\nCOPY --from=extra logo.txt /logo.txt\nRUN --mount=from=extra,target=/mnt ["/bin/busybox", "cp", "/mnt/logo.txt", "/copied.txt"]\n',
    );
    const out = join(dir, 'out.tar');
    const res = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '--build-context', `extra=${extra}`, '-o', `type=tar,dest=${out}`, dir]);
    try {
      expect(res.code, `${res.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
      expect(execFileSync('tar', ['-xOf', out, 'logo.txt'], { encoding: 'utf8' })).toBe('logo\n');
      expect(execFileSync('tar', ['-xOf', out, 'copied.txt'], { encoding: 'utf8' })).toBe('logo\n');
    } finally {
      rmSync(extra, { recursive: true, force: true });
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('exits 1 naming the file, line and column with the source line for a bad Dockerfile', async () => {
    const bad = mkdtempSync(join(tmpdir(), 'kiln-dockerfile-bad-'));
    writeFileSync(join(bad, 'Dockerfile'), 'FROM scratch\nCOPY --chmown=1 a /a\n');
    const res = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', bad]);
    rmSync(bad, { recursive: true, force: true });
    expect(res.code).toBe(1);
    expect(res.stderr).toContain('unknown flag: --chmown (did you mean chown?)');
    expect(res.stderr).toContain('(Dockerfile:2:6)\n 2 | COPY --chmown=1 a /a\n          ^');
  });
});
