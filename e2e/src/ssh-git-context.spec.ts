import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runKiln, startKilnd, startSshd, type Kilnd, type TestSshd, e2eWorker } from '@kiln/testkit';

const git = (args: string[], cwd: string) =>
  execFileSync('git', ['-c', 'user.name=kiln', '-c', 'user.email=kiln@example.com', ...args], { cwd, encoding: 'utf8' }).trim();

async function waitFor(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} did not come up`);
}

/**
 * `kiln build ssh://...#REF --ssh default`: the daemon's git fetch goes over
 * SSH to a real sshd on 127.0.0.1 (its own host key, one authorized key) and
 * authenticates with the user's ssh-agent, relayed through the build session.
 */
describe(`SSH git contexts through the forwarded agent [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let root: string;
  let daemon: Kilnd;
  let sshd: TestSshd;
  let agent: ChildProcess;
  let agentSock: string;
  let url: string;
  let n = 0;

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'kiln-ssh-git-'));
    const work = join(root, 'work');
    mkdirSync(join(work, 'app'), { recursive: true });
    git(['init', '-q', '-b', 'main'], work);
    writeFileSync(join(work, 'app', 'Dockerfile'), 'FROM scratch\nCOPY . /ctx/\n');
    writeFileSync(join(work, 'app', 'secret-repo.txt'), 'over ssh\n');
    writeFileSync(join(work, 'docker-bake.hcl'), 'target "app" {\n  context = "app"\n}\n');
    git(['add', '.'], work);
    git(['commit', '-q', '-m', 'v1'], work);
    git(['tag', 'v1'], work);
    const bare = join(root, 'repo.git');
    execFileSync('git', ['clone', '-q', '--bare', work, bare]);

    // sshd: host key and authorized key of the test's own, loopback only, keys only.
    sshd = await startSshd(join(root, 'sshd'));
    // A real agent holding the user key; the CLI forwards it with --ssh default.
    agentSock = join(root, 'agent.sock');
    agent = spawn('ssh-agent', ['-D', '-a', agentSock], { stdio: 'ignore' });
    await waitFor(() => existsSync(agentSock), 'ssh-agent');
    execFileSync('ssh-add', ['-q', sshd.userKey], { env: { ...process.env, SSH_AUTH_SOCK: agentSock }, stdio: 'ignore' });
    url = `ssh://root@127.0.0.1:${sshd.port}${bare}`;
    daemon = await startKilnd();
  }, 90_000);
  afterAll(async () => {
    await daemon?.stop();
    sshd?.stop();
    agent?.kill();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  async function build(args: string[], env: NodeJS.ProcessEnv = {}) {
    const out = join(root, 'out', String(++n));
    const res = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '-o', `type=local,dest=${out}`, ...args], { env: { SSH_AUTH_SOCK: agentSock, ...env } });
    return { ...res, out, why: `${res.stderr}\n${daemon.logs().slice(-3000)}` };
  }

  it('ssh://USER@127.0.0.1:PORT/PATH#REF:SUBDIR with --ssh default: fetched with the client agent', async () => {
    const r = await build(['--ssh', 'default', `${url}#v1:app`]);
    expect(r.code, r.why).toBe(0);
    expect(readdirSync(join(r.out, 'ctx')).sort()).toEqual(['Dockerfile', 'secret-repo.txt']);
    expect(readFileSync(join(r.out, 'ctx', 'secret-repo.txt'), 'utf8')).toBe('over ssh\n');
  }, 60_000);

  it('without --ssh the fetch is refused by sshd, and the error says to forward an agent', async () => {
    // A new ref so the first case's cached checkout is not reused.
    const r = await build([`${url}#main:app`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('pass --ssh default');
  }, 60_000);

  it('kiln bake ssh://...: the remote bake definition is read with the agent in SSH_AUTH_SOCK', async () => {
    const r = await runKiln(['bake', '--addr', daemon.addr, '--progress=plain', '--print', `${url}#v1`, 'app'], { env: { SSH_AUTH_SOCK: agentSock } });
    expect(r.code, `${r.stderr}\n${daemon.logs().slice(-2000)}`).toBe(0);
    expect(JSON.parse(r.stdout).target.app.context).toBe(`${url}#v1:app`);
  }, 60_000);
});
