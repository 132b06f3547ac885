import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { session as sessionApi } from '@kiln/api';
import { createKilnClient, createNodeTransport, parseIgnoreFile, readTarEntries } from '@kiln/common';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startFakeDaemon, type FakeDaemon, type FakeSessionPeer } from '../testing/fixtures/fake-daemon.js';
import { attachSession, type Session, type SessionOutput } from './session-client.js';
import { tarOf } from '../testing/fixtures/tar-of.js';

let daemon: FakeDaemon;
let root: string;
let ctx: string;
let dfDir: string;
let sess: Session;
let peer: FakeSessionPeer;
let stdout: PassThrough;
let stdoutData: Buffer[];

async function open(outputs: SessionOutput[] = []) {
  const client = createKilnClient(sessionApi.SessionService, createNodeTransport(daemon.address));
  stdout = new PassThrough();
  stdoutData = [];
  stdout.on('data', (b: Buffer) => stdoutData.push(b));
  sess = attachSession(client, {
    sessionId: 'sess-1',
    dirs: [
      { name: 'context', path: ctx, excludes: parseIgnoreFile(readFileSync(join(ctx, '.dockerignore'), 'utf8')) },
      { name: 'dockerfile', path: dfDir },
    ],
    outputs,
    stdout,
  });
  await sess.ready();
  peer = await daemon.session('sess-1');
}

async function entries(tar: Uint8Array): Promise<Record<string, { type: string; mode: number; data: string; linkname: string }>> {
  const out: Record<string, { type: string; mode: number; data: string; linkname: string }> = {};
  async function* one() {
    yield tar;
  }
  for await (const { header, body } of readTarEntries(one())) {
    const parts: Uint8Array[] = [];
    for await (const b of body) parts.push(b);
    out[header.name] = { type: header.type, mode: header.mode, data: Buffer.concat(parts).toString(), linkname: header.linkname };
  }
  return out;
}


beforeEach(async () => {
  daemon = await startFakeDaemon();
  root = mkdtempSync(join(tmpdir(), 'kiln-sess-'));
  ctx = join(root, 'ctx');
  dfDir = join(root, 'df');
  const files: Record<string, string> = {
    'ctx/.dockerignore': 'secret*\nnode_modules\n!node_modules/keep\n',
    'ctx/app/main.sh': 'echo hi\n',
    'ctx/app/lib/util.sh': 'util\n',
    'ctx/app/notes.md': 'notes\n',
    'ctx/secret.key': 'TOP SECRET',
    'ctx/node_modules/drop/x.js': 'x',
    'ctx/node_modules/keep/y.js': 'y',
    'ctx/big.bin': 'z'.repeat(300_000),
    'df/Dockerfile.custom': 'FROM scratch\nCOPY app /app\n',
  };
  for (const [p, data] of Object.entries(files)) {
    mkdirSync(join(root, p, '..'), { recursive: true });
    writeFileSync(join(root, p), data);
  }
  chmodSync(join(ctx, 'app/main.sh'), 0o755);
  utimesSync(join(ctx, 'app/main.sh'), 1_600_000_000, 1_600_000_000);
  symlinkSync('main.sh', join(ctx, 'app/run'));
  symlinkSync('../../etc/passwd', join(ctx, 'escape'));
  symlinkSync('Dockerfile.custom', join(dfDir, 'Dockerfile'));
});

afterEach(async () => {
  sess?.close(100);
  await sess?.closed();
  await daemon.close();
  rmSync(root, { recursive: true, force: true });
});

describe('attachSession', () => {
  it('says hello with its dirs and outputs, then waits for ready', async () => {
    await open([
      { id: 'out0', kind: 'dir', path: join(root, 'out') },
      { id: 'out1', kind: 'file', path: '-' },
    ]);
    expect(peer.hello.sessionId).toBe('sess-1');
    expect(peer.hello.dirs.map((d) => d.name)).toEqual(['context', 'dockerfile']);
    expect(peer.hello.outputs.map((o) => [o.id, o.kind])).toEqual([
      ['out0', 'dir'],
      ['out1', 'file'],
    ]);
  });

  it('fetch sends only included files, with parents, modes and links', async () => {
    await open();
    const { result } = peer.fetch('context', { include: ['app', 'node_modules', 'secret.key'], exclude: ['**/*.md'] });
    const { data, done } = await result;
    expect(done.error).toBe('');
    expect(Number(done.bytes)).toBe(data.length);
    const got = await entries(data);
    expect(Object.keys(got)).toEqual([
      'app',
      'app/lib',
      'app/lib/util.sh',
      'app/main.sh',
      'app/run',
      'node_modules',
      'node_modules/keep',
      'node_modules/keep/y.js',
    ]);
    expect(got['app/main.sh']).toMatchObject({ type: 'file', mode: 0o755, data: 'echo hi\n' });
    expect(got['app']).toMatchObject({ type: 'directory', mode: 0o755 });
    expect(got['app/run']).toMatchObject({ type: 'symlink', linkname: 'main.sh' });
  });

  it('fetch with no includes sends the whole dir minus .dockerignore, in ≤64 KiB messages', async () => {
    await open();
    const { data } = await peer.fetch('context').result;
    const got = await entries(data);
    expect(Object.keys(got).sort()).toEqual(
      ['.dockerignore', 'app', 'app/lib', 'app/lib/util.sh', 'app/main.sh', 'app/notes.md', 'app/run', 'big.bin', 'escape', 'node_modules', 'node_modules/keep', 'node_modules/keep/y.js'].sort(),
    );
    expect(got['big.bin']?.data.length).toBe(300_000);
    expect(got['escape']).toMatchObject({ type: 'symlink', linkname: '../../etc/passwd' });
  });

  it('fetch follows symlinks named in followPaths (the Dockerfile case)', async () => {
    await open();
    const { data } = await peer.fetch('dockerfile', { include: ['Dockerfile'], follow: ['Dockerfile'] }).result;
    const got = await entries(data);
    expect(Object.keys(got)).toEqual(['Dockerfile', 'Dockerfile.custom']);
  });

  it('fetch of an unknown dir or bad pattern is an error done', async () => {
    await open();
    const a = await peer.fetch('nope').result;
    expect(a.done).toMatchObject({ error: 'session has no directory "nope"', errorCode: 'not_found' });
    const b = await peer.fetch('context', { exclude: ['[oops'] }).result;
    expect(b.done.errorCode).toBe('invalid_argument');
  });

  it('read returns bytes, honours maxBytes and reports missing files', async () => {
    await open();
    const df = await peer.read('dockerfile', 'Dockerfile');
    expect(df.done.found).toBe(true);
    expect(df.data.toString()).toBe('FROM scratch\nCOPY app /app\n');
    const part = await peer.read('context', 'big.bin', 70_000);
    expect(part.data.length).toBe(70_000);
    expect(Number(part.done.bytes)).toBe(70_000);
    const missing = await peer.read('context', 'nope.txt');
    expect(missing.done).toMatchObject({ found: false, error: '' });
    const dir = await peer.read('context', 'app');
    expect(dir.done.found).toBe(false);
  });

  it('read never leaves the directory', async () => {
    await open();
    writeFileSync(join(root, 'outside.txt'), 'no');
    const dotdot = await peer.read('context', '../outside.txt');
    expect(dotdot.done.found).toBe(false); // cleaned to ctx/outside.txt, which does not exist
    symlinkSync('../outside.txt', join(ctx, 'sneaky'));
    const viaLink = await peer.read('context', 'sneaky');
    expect(viaLink.data.length).toBe(0);
    expect(viaLink.done.errorCode).toBe('permission_denied');
  });

  it('serves concurrent calls by call id', async () => {
    await open();
    const [a, b, c] = await Promise.all([peer.fetch('context', { include: ['big.bin'] }).result, peer.read('context', 'app/main.sh'), peer.fetch('dockerfile').result]);
    expect(Object.keys(await entries(a.data))).toEqual(['big.bin']);
    expect(b.data.toString()).toBe('echo hi\n');
    expect(Object.keys(await entries(c.data))).toEqual(['Dockerfile', 'Dockerfile.custom']);
  });

  it('write extracts a tar into a dir output with modes kept', async () => {
    const out = join(root, 'out', 'dir');
    await open([{ id: 'out0', kind: 'dir', path: out }]);
    const tar = tarOf([
      { name: 'bin', type: 'directory', mode: 0o750 },
      { name: 'bin/tool', mode: 0o755, data: '#!/bin/sh\n' },
      { name: 'etc/conf', mode: 0o600, data: 'x'.repeat(5000) },
      { name: 'link', type: 'symlink', linkname: 'bin/tool' },
    ]);
    const done = await peer.write('out0', tar, 777);
    expect(done).toMatchObject({ error: '', bytes: BigInt(tar.length) });
    expect(statSync(join(out, 'bin')).mode & 0o777).toBe(0o750);
    expect(statSync(join(out, 'bin/tool')).mode & 0o777).toBe(0o755);
    expect(statSync(join(out, 'bin/tool')).mtimeMs).toBe(1_650_000_000_000);
    expect(readFileSync(join(out, 'etc/conf'), 'utf8')).toBe('x'.repeat(5000));
  });

  it('write rejects entries escaping the output dir', async () => {
    const out = join(root, 'out');
    await open([{ id: 'out0', kind: 'dir', path: out }]);
    const done = await peer.write('out0', tarOf([{ name: 'fine', data: '1' }, { name: '../evil', data: 'x' }, { name: 'after', data: '2' }]));
    expect(done.error).toMatch(/refusing to extract "..\/evil"/);
    expect(done.errorCode).toBe('invalid_argument');
    expect(existsSync(join(root, 'evil'))).toBe(false);
    expect(existsSync(join(out, 'after'))).toBe(false);
    // The session goes on serving.
    const again = await peer.write('out0', tarOf([{ name: 'ok', data: '3' }]));
    expect(again.error).toBe('');
    expect(readFileSync(join(out, 'ok'), 'utf8')).toBe('3');
  });

  it('write to a file output and to stdout', async () => {
    const file = join(root, 'out', 'image.tar');
    await open([
      { id: 'f', kind: 'file', path: file },
      { id: 's', kind: 'file', path: '-' },
    ]);
    const bytes = Buffer.from('a'.repeat(10_000));
    expect((await peer.write('f', bytes, 999)).bytes).toBe(10_000n);
    expect(readFileSync(file).equals(bytes)).toBe(true);
    expect((await peer.write('s', Buffer.from('to stdout'))).error).toBe('');
    expect(Buffer.concat(stdoutData).toString()).toBe('to stdout');
  });

  it('write to an unknown output fails', async () => {
    await open();
    const done = await peer.write('zzz', Buffer.from('x'));
    expect(done).toMatchObject({ error: 'session has no output "zzz"', errorCode: 'not_found' });
  });

  it('closes cleanly when the client closes', async () => {
    await open();
    sess.close();
    expect(await sess.closed()).toBeUndefined();
    await peer.clientEnded;
  });

  it('closes cleanly when the daemon ends the stream', async () => {
    await open();
    peer.end();
    expect(await sess.closed()).toBeUndefined();
  });

  it('a daemon cancel stops a running write with an error done', async () => {
    await open([{ id: 'f', kind: 'file', path: join(root, 'f.bin') }]);
    const w = peer.beginWrite('f');
    await w.send(Buffer.alloc(10));
    peer.cancel(w.callId);
    expect(await w.done).toMatchObject({ errorCode: 'canceled' });
    // Late data for the canceled call is ignored.
    await w.send(Buffer.alloc(10));
    await w.end();
    expect((await peer.read('context', 'app/main.sh')).done.found).toBe(true);
  });

  it('reports a daemon that cannot be reached', async () => {
    const client = createKilnClient(sessionApi.SessionService, createNodeTransport('unix:///tmp/kiln-no-such.sock'));
    const s = attachSession(client, { sessionId: 'x', dirs: [], outputs: [] });
    await expect(s.ready()).rejects.toThrow(/ENOENT/);
    expect(await s.closed()).toBeInstanceOf(Error);
  });
});
