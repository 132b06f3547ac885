import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, runKiln, startKilnd, type Kilnd, e2eWorker } from '@kiln/testkit';

const GIT_DAEMON = '/usr/lib/git-core/git-daemon';

const git = (args: string[], cwd: string) =>
  execFileSync('git', ['-c', 'user.name=kiln', '-c', 'user.email=kiln@example.com', ...args], { cwd, encoding: 'utf8' }).trim();

// The remote definition: "root" builds the repository itself, "sub" its app/ directory,
// "here" the directory bake runs in (BAKE_CMD_CONTEXT), "mixed" app/ plus a local named context.
const BAKE_HCL = `
group "default" { targets = ["root", "sub", "here", "mixed"] }
target "root" {
  output = ["type=local,dest=out/root"]
}
target "sub" {
  context = "app"
  output = ["type=local,dest=out/sub"]
}
target "here" {
  context = BAKE_CMD_CONTEXT
  output = ["type=local,dest=out/here"]
}
target "mixed" {
  context = "app"
  dockerfile = "Dockerfile.mixed"
  contexts = { extra = "cwd://extra" }
  output = ["type=local,dest=out/mixed"]
}
`;

function makeRepo(base: string): void {
  const work = join(base, 'work');
  mkdirSync(join(work, 'app'), { recursive: true });
  git(['init', '-q', '-b', 'main'], work);
  writeFileSync(join(work, 'docker-bake.hcl'), BAKE_HCL);
  writeFileSync(join(work, 'Dockerfile'), 'FROM scratch\nCOPY . /r/\n');
  writeFileSync(join(work, 'app', 'Dockerfile'), 'FROM scratch\nCOPY . /a/\n');
  writeFileSync(join(work, 'app', 'Dockerfile.mixed'), 'FROM scratch\nCOPY --from=extra e.txt /e.txt\nCOPY app.txt /app.txt\n');
  writeFileSync(join(work, 'app', 'app.txt'), 'from the repo\n');
  git(['add', '.'], work);
  git(['commit', '-q', '-m', 'bake'], work);
  git(['tag', 'v1'], work);
  execFileSync('git', ['clone', '-q', '--bare', work, join(base, 'repo.git')]);
}

describe(`kiln bake URL: a remote bake definition [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let root: string;
  let cwd: string;
  let daemon: Kilnd;
  let gitd: ChildProcess;
  let url: string;
  let files: Server;
  let tarUrl: string;

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'kiln-remote-bake-'));
    const repos = join(root, 'repos');
    mkdirSync(repos);
    makeRepo(repos);
    const port = await freePort();
    gitd = spawn(GIT_DAEMON, ['--reuseaddr', '--export-all', '--listen=127.0.0.1', `--port=${port}`, `--base-path=${repos}`, repos], { stdio: 'ignore' });
    url = `git://127.0.0.1:${port}/repo.git`;
    for (let i = 0; i < 50; i++) {
      try {
        execFileSync('git', ['ls-remote', url], { stdio: 'ignore' });
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    // The directory bake runs in: a Dockerfile and files of its own, no bake file.
    cwd = join(root, 'cwd');
    mkdirSync(join(cwd, 'extra'), { recursive: true });
    writeFileSync(join(cwd, 'Dockerfile'), 'FROM scratch\nCOPY local.txt /l/local.txt\n');
    writeFileSync(join(cwd, 'local.txt'), 'from the cwd\n');
    writeFileSync(join(cwd, 'extra', 'e.txt'), 'extra here\n');
    // An http(s) remote definition: a .tar.gz holding a bake file and the Dockerfile it builds.
    const tarDir = join(root, 'tar-src');
    mkdirSync(tarDir);
    writeFileSync(join(tarDir, 'docker-bake.hcl'), 'target "default" {\n  output = ["type=local,dest=out/tarball"]\n}\n');
    writeFileSync(join(tarDir, 'Dockerfile'), 'FROM scratch\nCOPY . /t/\n');
    const body = execFileSync('tar', ['-C', tarDir, '-czf', '-', '.']);
    files = createServer((req, res) => (req.url === '/bake.tar.gz' ? res.writeHead(200, { 'content-type': 'application/gzip' }).end(body) : res.writeHead(404).end()));
    await new Promise<void>((r) => files.listen(0, '127.0.0.1', () => r()));
    tarUrl = `http://127.0.0.1:${(files.address() as AddressInfo).port}/bake.tar.gz`;
    daemon = await startKilnd();
  }, 90_000);
  afterAll(async () => {
    await daemon?.stop();
    gitd?.kill();
    files?.close();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  const bake = (args: string[]) => runKiln(['bake', '--addr', daemon.addr, '--progress=plain', ...args], { cwd });

  it('reads the bake file from the repository; ".", relative and cwd:// contexts resolve as buildx', async () => {
    const r = await bake([`${url}#v1`]);
    expect(r.code, `${r.stderr}\n${daemon.logs().slice(-3000)}`).toBe(0);
    expect(r.stderr).toContain(`[internal] load git source ${url}#v1`);
    // root: the whole repository at v1 (no .git).
    expect(readdirSync(join(cwd, 'out', 'root', 'r')).sort()).toEqual(['Dockerfile', 'app', 'docker-bake.hcl']);
    // sub: app/ of the repository, with its own Dockerfile.
    expect(readFileSync(join(cwd, 'out', 'sub', 'a', 'app.txt'), 'utf8')).toBe('from the repo\n');
    expect(existsSync(join(cwd, 'out', 'sub', 'a', 'docker-bake.hcl'))).toBe(false);
    // here: BAKE_CMD_CONTEXT is the local directory, its Dockerfile too.
    expect(readFileSync(join(cwd, 'out', 'here', 'l', 'local.txt'), 'utf8')).toBe('from the cwd\n');
    // mixed: the remote app/ dir with a cwd:// named context.
    expect(readFileSync(join(cwd, 'out', 'mixed', 'e.txt'), 'utf8')).toBe('extra here\n');
    expect(readFileSync(join(cwd, 'out', 'mixed', 'app.txt'), 'utf8')).toBe('from the repo\n');
  }, 120_000);

  it('--print shows the resolved remote contexts; -f cwd://FILE adds a local bake file', async () => {
    writeFileSync(join(cwd, 'override.hcl'), 'target "sub" { args = { FROM_LOCAL = "yes" } }\n');
    const r = await bake(['-f', 'docker-bake.hcl', '-f', 'cwd://override.hcl', '--print', `${url}#main`, 'sub', 'here']);
    expect(r.code, r.stderr).toBe(0);
    const printed = JSON.parse(r.stdout) as { target: Record<string, { context: string; args?: Record<string, string> }> };
    expect(printed.target.sub!.context).toBe(`${url}#main:app`);
    expect(printed.target.sub!.args).toEqual({ FROM_LOCAL: 'yes' });
    expect(printed.target.here!.context).toBe('cwd://');
  }, 60_000);

  it('a missing bake file or a context outside the repository fails naming it', async () => {
    const missing = await bake(['-f', 'nope.hcl', `${url}#main`]);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toContain('nope.hcl');
    writeFileSync(join(cwd, 'escape.hcl'), 'target "esc" { context = "../up" }\n');
    const esc = await bake(['-f', 'docker-bake.hcl', '-f', 'cwd://escape.hcl', '--print', `${url}#main`, 'esc']);
    expect(esc.code).not.toBe(0);
    expect(esc.stderr).toContain('"../up" is outside of the remote definition');
  }, 60_000);

  it('an http(s) archive is a remote definition too: its bake file, the archive as the context', async () => {
    const r = await bake([tarUrl]);
    expect(r.code, `${r.stderr}\n${daemon.logs().slice(-3000)}`).toBe(0);
    expect(readdirSync(join(cwd, 'out', 'tarball', 't')).sort()).toEqual(['Dockerfile', 'docker-bake.hcl']);
  }, 60_000);
});
