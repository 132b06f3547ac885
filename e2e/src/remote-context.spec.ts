import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, runKiln, startKilnd, type Kilnd , e2eWorker } from '@kiln/testkit';

const GIT_DAEMON = '/usr/lib/git-core/git-daemon';
const canRun = process.getuid?.() === 0 && existsSync(GIT_DAEMON);

const git = (args: string[], cwd: string) =>
  execFileSync('git', ['-c', 'user.name=kiln', '-c', 'user.email=kiln@example.com', ...args], {
    cwd,
    encoding: 'utf8',
    env: { ...process.env, GIT_AUTHOR_DATE: '2024-01-02T03:04:05Z', GIT_COMMITTER_DATE: '2024-01-02T03:04:05Z' },
  }).trim();

/**
 * A bare repository `repo.git` under `base`: tag v1 has app/Dockerfile and
 * app/v1.txt; main (HEAD) adds root Dockerfile + Dockerfile.alt in app/.
 */
function makeRepo(base: string): { v1: string } {
  const work = join(base, 'work');
  mkdirSync(join(work, 'app'), { recursive: true });
  git(['init', '-q', '-b', 'main'], work);
  writeFileSync(join(work, 'app', 'Dockerfile'), 'FROM scratch\nCOPY . /ctx/\n');
  writeFileSync(join(work, 'app', 'v1.txt'), 'one\n');
  git(['add', '.'], work);
  git(['commit', '-q', '-m', 'v1'], work);
  git(['tag', 'v1'], work);
  const v1 = git(['rev-parse', 'HEAD'], work);
  writeFileSync(join(work, 'Dockerfile'), 'FROM scratch\nCOPY . /root/\n');
  writeFileSync(join(work, 'app', 'Dockerfile.alt'), 'FROM scratch\nCOPY v1.txt /alt/v1.txt\n');
  writeFileSync(join(work, 'top.txt'), 'top\n');
  git(['add', '.'], work);
  git(['commit', '-q', '-m', 'v2'], work);
  execFileSync('git', ['clone', '-q', '--bare', work, join(base, 'repo.git')]);
  return { v1 };
}

/** `git daemon` (the git:// protocol) on 127.0.0.1 serving `base`. */
async function startGitDaemon(base: string): Promise<{ url: string; proc: ChildProcess }> {
  const port = await freePort();
  const proc = spawn(GIT_DAEMON, ['--reuseaddr', '--export-all', '--listen=127.0.0.1', `--port=${port}`, `--base-path=${base}`, base], { stdio: 'ignore' });
  const url = `git://127.0.0.1:${port}/repo.git`;
  for (let i = 0; i < 50; i++) {
    try {
      execFileSync('git', ['ls-remote', url], { stdio: 'ignore' });
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return { url, proc };
}

/** Git's smart HTTP protocol: each request runs `git http-backend` (CGI) over the repositories under `base`. */
function gitHttpBackend(base: string) {
  return (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const cgi = spawn('git', ['http-backend'], {
      env: {
        PATH: process.env.PATH,
        GIT_PROJECT_ROOT: base,
        GIT_HTTP_EXPORT_ALL: '1',
        REQUEST_METHOD: req.method ?? 'GET',
        PATH_INFO: decodeURIComponent(url.pathname.replace(/^\/git/, '')),
        QUERY_STRING: url.search.slice(1),
        CONTENT_TYPE: req.headers['content-type'] ?? '',
        ...(req.headers['content-encoding'] ? { HTTP_CONTENT_ENCODING: req.headers['content-encoding'] } : {}),
        GIT_PROTOCOL: String(req.headers['git-protocol'] ?? ''),
        REMOTE_ADDR: '127.0.0.1',
      },
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    req.pipe(cgi.stdin);
    let head = Buffer.alloc(0);
    let started = false;
    cgi.stdout.on('data', (chunk: Buffer) => {
      if (started) return void res.write(chunk);
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      started = true;
      let status = 200;
      for (const line of head.subarray(0, end).toString('latin1').split('\r\n')) {
        const colon = line.indexOf(':');
        const [k, v] = [line.slice(0, colon).trim(), line.slice(colon + 1).trim()];
        if (k.toLowerCase() === 'status') status = Number(v.split(' ')[0]);
        else res.setHeader(k, v);
      }
      res.writeHead(status);
      res.write(head.subarray(end + 4));
    });
    cgi.on('close', () => res.end());
  };
}

function listen(server: Server): Promise<number> {
  return new Promise((r) => server.listen(0, '127.0.0.1', () => r((server.address() as AddressInfo).port)));
}

describe.skipIf(!canRun)(`remote build contexts: git and http(s) URLs fetched by the daemon [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let root: string;
  let daemon: Kilnd;
  let gitd: { url: string; proc: ChildProcess };
  let v1: string;
  let gitHttp: Server;
  let gitHttpUrl: string;
  let files: Server;
  let filesUrl: string;
  let tls: Server;
  let tlsUrl: string;
  const served = new Map<string, { type: string; body: Buffer }>();
  let n = 0;

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'kiln-remote-ctx-'));
    const repos = join(root, 'repos');
    mkdirSync(repos);
    ({ v1 } = makeRepo(repos));
    gitd = await startGitDaemon(repos);
    gitHttp = createHttpServer(gitHttpBackend(repos));
    gitHttpUrl = `http://127.0.0.1:${await listen(gitHttp)}/git/repo.git`;

    const handler = (req: IncomingMessage, res: ServerResponse) => {
      const f = served.get(req.url ?? '');
      if (!f) return void res.writeHead(404).end('not found');
      res.writeHead(200, { 'content-type': f.type, 'content-length': String(f.body.length) }).end(f.body);
    };
    files = createHttpServer(handler);
    filesUrl = `http://127.0.0.1:${await listen(files)}`;
    // https with a CA of the test's own, which the daemon trusts through NODE_EXTRA_CA_CERTS (README: "Remote build contexts").
    const pki = join(root, 'pki');
    mkdirSync(pki);
    const ssl = (args: string[]) => execFileSync('openssl', args, { cwd: pki, stdio: 'ignore' });
    ssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=kiln test CA']);
    ssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'srv.key', '-out', 'srv.csr', '-subj', '/CN=127.0.0.1']);
    writeFileSync(join(pki, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1\n');
    ssl(['x509', '-req', '-in', 'srv.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'srv.pem', '-days', '2', '-extfile', 'ext.cnf']);
    tls = createHttpsServer({ key: readFileSync(join(pki, 'srv.key')), cert: readFileSync(join(pki, 'srv.pem')) }, handler);
    tlsUrl = `https://127.0.0.1:${await listen(tls)}`;

    daemon = await startKilnd({ env: { NODE_EXTRA_CA_CERTS: join(pki, 'ca.pem') } });
  }, 90_000);
  afterAll(async () => {
    await daemon?.stop();
    gitd?.proc.kill();
    for (const s of [gitHttp, files, tls]) s?.close();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  async function build(args: string[]) {
    const out = join(root, 'out', String(++n));
    const res = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '-o', `type=local,dest=${out}`, ...args]);
    return { ...res, out, why: `${res.stderr}\n${daemon.logs().slice(-3000)}` };
  }

  describe('git', () => {
    it('smart HTTP URL#ref:subdir: the subdir at the tag is the context, its Dockerfile is used, no .git', async () => {
      const r = await build([`${gitHttpUrl}#v1:app`]);
      expect(r.code, r.why).toBe(0);
      expect(readdirSync(join(r.out, 'ctx')).sort()).toEqual(['Dockerfile', 'v1.txt']);
      expect(readFileSync(join(r.out, 'ctx', 'v1.txt'), 'utf8')).toBe('one\n');
      expect(r.stderr).toContain(`[internal] load git source ${gitHttpUrl}#v1:app`);
    }, 120_000);

    it('git:// at HEAD; .git is in the context only with BUILDKIT_CONTEXT_KEEP_GIT_DIR=1', async () => {
      const plain = await build([gitd.url]);
      expect(plain.code, plain.why).toBe(0);
      expect(readFileSync(join(plain.out, 'root', 'top.txt'), 'utf8')).toBe('top\n');
      expect(existsSync(join(plain.out, 'root', '.git'))).toBe(false);
      const kept = await build(['--build-arg', 'BUILDKIT_CONTEXT_KEEP_GIT_DIR=1', `${gitd.url}#main`]);
      expect(kept.code, kept.why).toBe(0);
      expect(existsSync(join(kept.out, 'root', '.git', 'HEAD'))).toBe(true);
    }, 120_000);

    it('a relative -f is a path in the repository; a commit id is a ref; an absolute -f is a local Dockerfile', async () => {
      const alt = await build(['-f', 'app/Dockerfile.alt', `${gitd.url}#main`]);
      // The context is the repository root here, so app/Dockerfile.alt's `COPY v1.txt` finds nothing.
      expect(alt.code).toBe(1);
      expect(alt.stderr).toMatch(/v1\.txt/);
      const sub = await build(['-f', 'Dockerfile.alt', `${gitd.url}#main:app`]);
      expect(sub.code, sub.why).toBe(0);
      expect(readFileSync(join(sub.out, 'alt', 'v1.txt'), 'utf8')).toBe('one\n');
      const local = join(root, 'Dockerfile.local');
      writeFileSync(local, 'FROM scratch\nCOPY . /pinned/\n');
      const pinned = await build(['-f', local, `${gitd.url}#${v1}`]);
      expect(pinned.code, pinned.why).toBe(0);
      expect(readdirSync(join(pinned.out, 'pinned')).sort()).toEqual(['app']);
    }, 120_000);

    it('a missing ref fails naming it', async () => {
      const r = await build([`${gitd.url}#no-such-branch`]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('no-such-branch');
    }, 60_000);
  });

  describe('http(s)', () => {
    const tarGz = () => {
      const dir = join(root, 'tarball');
      mkdirSync(join(dir, 'sub'), { recursive: true });
      writeFileSync(join(dir, 'Dockerfile'), 'FROM scratch\nCOPY . /t/\n');
      writeFileSync(join(dir, 'sub', 'f.txt'), 'from the tarball\n');
      return execFileSync('tar', ['-C', dir, '-czf', '-', '.']);
    };

    it('a .tar.gz URL is unpacked as the context (gzip found by its bytes, not the name)', async () => {
      served.set('/ctx.tar.gz', { type: 'application/gzip', body: tarGz() });
      served.set('/download', { type: 'application/octet-stream', body: tarGz() });
      for (const path of ['/ctx.tar.gz', '/download']) {
        const r = await build([`${filesUrl}${path}`]);
        expect(r.code, r.why).toBe(0);
        expect(readFileSync(join(r.out, 't', 'sub', 'f.txt'), 'utf8')).toBe('from the tarball\n');
        expect(r.stderr).toContain('[internal] load remote build context');
      }
    }, 120_000);

    it('a plain-text URL is the Dockerfile; the context holds only that file, named "context"', async () => {
      const text = 'FROM scratch\nCOPY context /df\n';
      served.set('/Dockerfile', { type: 'text/plain', body: Buffer.from(text) });
      const r = await build([`${filesUrl}/Dockerfile`]);
      expect(r.code, r.why).toBe(0);
      expect(readFileSync(join(r.out, 'df'), 'utf8')).toBe(text);
    }, 120_000);

    it('https with a CA the daemon trusts; a 404 fails naming the status', async () => {
      served.set('/tls.tar.gz', { type: 'application/gzip', body: tarGz() });
      const r = await build([`${tlsUrl}/tls.tar.gz`]);
      expect(r.code, r.why).toBe(0);
      expect(readFileSync(join(r.out, 't', 'sub', 'f.txt'), 'utf8')).toBe('from the tarball\n');
      const missing = await build([`${filesUrl}/missing.tar.gz`]);
      expect(missing.code).toBe(1);
      expect(missing.stderr).toContain('404');
    }, 120_000);
  });
});
