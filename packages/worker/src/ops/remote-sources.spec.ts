import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { silentLogger } from '@kiln/common';
import { startSshd } from '@kiln/testkit';
import { source } from '@kiln/llb';
import { createDirectorySnapshotter } from '@kiln/snapshotter';
import { createEventCollector, createFakeSession, FakeExecutor, readTar, solve } from '../testing/index.js';
import { createWorker, type Worker } from '../worker.js';
import { isSshRemote, parseGitSource } from './git-source.js';

const sha = (b: string | Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

describe('remote sources', () => {
  let root: string;
  let worker: Worker;
  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'kiln-remote-src-'));
    worker = createWorker({
      id: 'w-remote',
      backend: 'oci',
      snapshotter: createDirectorySnapshotter({ root: path.join(root, 'snapshots') }),
      executor: new FakeExecutor(),
      sessions: createFakeSession().client,
      publish: createEventCollector().publish,
      logger: silentLogger(),
    });
  });
  afterAll(async () => {
    await worker.close();
    await rm(root, { recursive: true, force: true });
  });

  const tree = async (ref: string) => (await readTar(worker.exportRef(ref))).map((e) => ({ name: e.name, mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime, data: e.data.toString() }));

  describe('https:// and http:// (llb.HTTP attrs)', () => {
    let server: Server;
    let base: string;
    beforeAll(async () => {
      server = createServer((req, res) => {
        if (req.url === '/files/tool.sh') {
          res.writeHead(200, { 'last-modified': 'Tue, 02 Jan 2024 03:04:05 GMT', 'content-length': '8' });
          res.end('#!/bin/x');
        } else if (req.url === '/dl?id=3') {
          res.writeHead(200, { 'content-disposition': 'attachment; filename="report.txt"' });
          res.end('report');
        } else if (req.url === '/moved') {
          res.writeHead(302, { location: '/files/tool.sh' });
          res.end();
        } else {
          res.writeHead(404);
          res.end('no');
        }
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });
    afterAll(async () => {
      await new Promise((r) => server.close(r));
    });

    it('downloads into one file named by the URL, with Last-Modified, default mode 0600 and a verified checksum', async () => {
      const ref = (await solve(worker, source(`${base}/files/tool.sh`, { 'http.checksum': sha('#!/bin/x') })))!;
      expect(await tree(ref)).toEqual([{ name: 'tool.sh', mode: 0o600, uid: 0, gid: 0, mtime: Date.UTC(2024, 0, 2, 3, 4, 5) / 1000, data: '#!/bin/x' }]);
      await worker.release([ref]);
    });

    it('honours http.filename, http.perm, http.uid/gid, redirects and Content-Disposition', async () => {
      const ref = (await solve(worker, source(`${base}/moved`, { 'http.filename': 'run', 'http.perm': '0755', 'http.uid': '1000', 'http.gid': '1001' })))!;
      expect((await tree(ref)).map((e) => [e.name, e.mode, e.uid, e.gid, e.data])).toEqual([['run', 0o755, 1000, 1001, '#!/bin/x']]);
      const named = (await solve(worker, source(`${base}/dl?id=3`, {})))!;
      expect((await tree(named)).map((e) => [e.name, e.data])).toEqual([['report.txt', 'report']]);
      await worker.release([ref, named]);
    });

    it('fails on a checksum mismatch naming both digests, and on HTTP errors naming the status', async () => {
      const wrong = `sha256:${'0'.repeat(64)}`;
      await expect(solve(worker, source(`${base}/files/tool.sh`, { 'http.checksum': wrong }))).rejects.toMatchObject({
        code: 'vertex',
        message: expect.stringMatching(new RegExp(`digest mismatch: ${wrong} was expected, the content is ${sha('#!/bin/x')}`)),
      });
      await expect(solve(worker, source(`${base}/missing`, {}))).rejects.toMatchObject({ code: 'vertex', message: expect.stringContaining('404') });
      await expect(solve(worker, source(`${base}/x`, { 'http.perm': 'rwx' }))).rejects.toMatchObject({ message: expect.stringContaining('http.perm must be a number') });
    });
  });

  describe('git:// through the git CLI', () => {
    let repo: string;
    let firstCommit: string;
    const git = (...args: string[]) =>
      execFileSync('git', args, {
        cwd: repo,
        env: { ...process.env, GIT_AUTHOR_DATE: '2024-01-02T03:04:05Z', GIT_COMMITTER_DATE: '2024-01-02T03:04:05Z', GIT_CONFIG_NOSYSTEM: '1', HOME: root },
      })
        .toString()
        .trim();
    beforeAll(async () => {
      const work = path.join(root, 'work');
      repo = work;
      await mkdir(path.join(work, 'docs'), { recursive: true });
      git('init', '-q', '-b', 'main');
      git('config', 'user.email', 't@example.invalid');
      git('config', 'user.name', 't');
      await writeFile(path.join(work, 'README'), 'v1\n');
      await writeFile(path.join(work, 'docs/guide.md'), 'guide\n');
      git('add', '.');
      git('commit', '-q', '-m', 'one');
      firstCommit = git('rev-parse', 'HEAD');
      git('tag', 'v1');
      await writeFile(path.join(work, 'README'), 'v2\n');
      git('commit', '-q', '-am', 'two');
      git('clone', '-q', '--bare', work, path.join(root, 'repo.git'));
    });
    const url = () => `file://${path.join(root, 'repo.git')}`;

    it('parses identifiers like BuildKit', () => {
      expect(parseGitSource('git://github.com/moby/buildkit.git#v0.12:docs', {})).toEqual({ remote: 'https://github.com/moby/buildkit.git', ref: 'v0.12', subdir: 'docs', keepGitDir: false });
      expect(parseGitSource('git://example/x.git', { 'git.fullurl': 'ssh://git@example/x.git', 'git.keepgitdir': 'true', 'git.subdir': '/a/../b/' })).toEqual({
        remote: 'ssh://git@example/x.git',
        ref: '',
        subdir: 'b',
        keepGitDir: true,
      });
    });

    it('an SSH remote: the host key must match git.knownsshhosts; without a forwarded agent the error says --ssh', async () => {
      const sshd = await startSshd(path.join(root, 'sshd'));
      try {
        const fullUrl = `ssh://root@127.0.0.1:${sshd.port}${path.join(root, 'repo.git')}`;
        const other = path.join(root, 'other_key');
        execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', other]);
        const otherKey = execFileSync('cat', [`${other}.pub`]).toString().trim().split(' ').slice(0, 2).join(' ');
        const fetch = (known: string) => solve(worker, source('git://127.0.0.1/repo.git#v1', { 'git.fullurl': fullUrl, 'git.knownsshhosts': known }));
        await expect(fetch(`[127.0.0.1]:${sshd.port} ${otherKey}`)).rejects.toThrow(/Host key verification failed/);
        // The right host key: the connection gets to authentication, which needs the client's agent.
        await expect(fetch(`[127.0.0.1]:${sshd.port} ${sshd.hostKey}`)).rejects.toThrow(/pass --ssh default/);
      } finally {
        sshd.stop();
      }
    }, 30_000);

    it('tells SSH remotes (agent forwarded, host key rules) from others', () => {
      for (const r of ['ssh://git@127.0.0.1:2222/repo.git', 'git+ssh://h/x', 'git@127.0.0.1:repo.git', 'root@host:/srv/x.git']) expect(isSshRemote(r), r).toBe(true);
      for (const r of ['https://user@host/x.git', 'git://host/x.git', 'file:///x', '/srv/x.git']) expect(isSshRemote(r), r).toBe(false);
    });

    it('checks out HEAD, a tag, a commit and a subdir, with mtimes set to the commit time', async () => {
      const head = (await solve(worker, source('git://local/repo.git', { 'git.fullurl': url() })))!;
      const t = Date.UTC(2024, 0, 2, 3, 4, 5) / 1000;
      expect((await tree(head)).map((e) => [e.name, e.data, e.mtime])).toEqual([
        ['README', 'v2\n', t],
        ['docs/', '', t],
        ['docs/guide.md', 'guide\n', t],
      ]);
      const tag = (await solve(worker, source('git://local/repo.git#v1', { 'git.fullurl': url() })))!;
      expect((await tree(tag)).find((e) => e.name === 'README')?.data).toBe('v1\n');
      const commit = (await solve(worker, source(`git://local/repo.git#${firstCommit}`, { 'git.fullurl': url() })))!;
      expect((await tree(commit)).find((e) => e.name === 'README')?.data).toBe('v1\n');
      const sub = (await solve(worker, source('git://local/repo.git#main:docs', { 'git.fullurl': url() })))!;
      expect((await tree(sub)).map((e) => e.name)).toEqual(['guide.md']);
      await worker.release([head, tag, commit, sub]);
    });

    it('keeps .git with git.keepgitdir, and fails naming a missing ref or subdir', async () => {
      const kept = (await solve(worker, source('git://local/repo.git#main', { 'git.fullurl': url(), 'git.keepgitdir': 'true' })))!;
      expect((await tree(kept)).some((e) => e.name === '.git/HEAD')).toBe(true);
      await worker.release([kept]);
      await expect(solve(worker, source('git://local/repo.git#nope', { 'git.fullurl': url() }))).rejects.toMatchObject({ code: 'vertex', message: expect.stringContaining('nope') });
      await expect(solve(worker, source('git://local/repo.git#main:missing', { 'git.fullurl': url() }))).rejects.toMatchObject({ code: 'vertex', message: expect.stringContaining('missing') });
    });
  });
});
