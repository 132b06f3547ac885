import { lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startKilnd, type Kilnd, e2eWorker } from '@kiln/testkit';
import { localBuilds } from './local-builds.js';

describe(`symlinks and sockets in the build context [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let daemon: Kilnd;
  let ctx: string;
  let socket: Server;
  beforeAll(async () => {
    daemon = await startKilnd();
    ctx = mkdtempSync(join(tmpdir(), 'kiln-ctx-links-'));
    mkdirSync(join(ctx, 'sub'), { mode: 0o700 });
    writeFileSync(join(ctx, 'sub/foo'), 'contents', { mode: 0o600 });
    symlinkSync('sub', join(ctx, 'link'));
    writeFileSync(join(ctx, 'bar'), 'bar-contents');
    mkdirSync(join(ctx, 'foo'));
    symlinkSync('../bar', join(ctx, 'foo/sub'));
    writeFileSync(join(ctx, 'plain'), 'x');
    socket = createServer();
    await new Promise<void>((resolve) => socket.listen(join(ctx, 'socket.sock'), resolve));
  }, 60_000);
  afterAll(async () => {
    await new Promise((resolve) => socket?.close(resolve));
    await daemon?.stop();
    if (ctx) rmSync(ctx, { recursive: true, force: true });
    builds.cleanup();
  });

  const builds = localBuilds(() => daemon.addr, () => ctx);
  const build = builds.build;

  it('follows a symlinked directory and a symlinked file on a COPY source; a link inside a copied directory stays a link', async () => {
    const res = await build(['FROM scratch', 'COPY link/foo .', 'COPY foo /', 'COPY foo/sub bar', ''].join('\n'));
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-3000)}`).toBe(0);
    expect(readFileSync(join(res.out, 'foo'), 'utf8')).toBe('contents');
    expect(readlinkSync(join(res.out, 'sub'))).toBe('../bar');
    expect(lstatSync(join(res.out, 'bar')).isFile()).toBe(true);
    expect(readFileSync(join(res.out, 'bar'), 'utf8')).toBe('bar-contents');
    rmSync(res.out, { recursive: true, force: true });
  }, 120_000);

  it('sends a socket as an empty regular file', async () => {
    const res = await build(['FROM scratch', 'COPY socket.sock plain /', ''].join('\n'));
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-3000)}`).toBe(0);
    expect(lstatSync(join(res.out, 'socket.sock')).isFile()).toBe(true);
    expect(readFileSync(join(res.out, 'socket.sock'), 'utf8')).toBe('');
    expect(readFileSync(join(res.out, 'plain'), 'utf8')).toBe('x');
    rmSync(res.out, { recursive: true, force: true });
  }, 120_000);

  it('COPY --link with an empty destination after WORKDIR puts the file inside the directory', async () => {
    const res = await build(['FROM scratch', 'WORKDIR /var/www', 'ENV empty=""', 'COPY plain /var/www/keep', 'COPY --link plain $empty', ''].join('\n'));
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-3000)}`).toBe(0);
    expect(readFileSync(join(res.out, 'var/www/plain'), 'utf8')).toBe('x');
    expect(readFileSync(join(res.out, 'var/www/keep'), 'utf8')).toBe('x');
    rmSync(res.out, { recursive: true, force: true });
  }, 120_000);
});
