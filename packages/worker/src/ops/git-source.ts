import { execFile } from 'node:child_process';
import { lstatSync, lutimesSync, readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { writeFile } from 'node:fs/promises';
import { CanceledError, InvalidArgumentError, silentLogger, type Logger } from '@kiln/common';
import { SshAgentSocket, type SshForwarder } from '../exec/ssh-agent-socket.js';
import { agentForwarded } from './exec-op.js';
import { resolveInRoot } from '@kiln/snapshotter';
import { OpFailure } from './op-failure.js';
import { newSnapshotKey, type OpContext, type OpResult } from './op-context.js';

/** BuildKit's attribute names (solver/pb/attr.go); `git.subdir` is Kiln's alternative to `#ref:subdir`. */
export const GIT_ATTRS = {
  fullUrl: 'git.fullurl',
  keepGitDir: 'git.keepgitdir',
  subdir: 'git.subdir',
  checksum: 'git.checksum',
  /** The `--ssh` id whose agent an SSH remote is fetched with (default "default"). */
  mountSshSock: 'git.mountsshsock',
  /** known_hosts lines the SSH remote's host key must match. */
  knownSshHosts: 'git.knownsshhosts',
} as const;

/** An SSH remote: `ssh://`, `git+ssh://` or scp-like `USER@HOST:PATH`. */
export function isSshRemote(remote: string): boolean {
  return /^(ssh|git\+ssh):\/\//i.test(remote) || (!remote.includes('://') && /^[^/@]+@[^/:]+:/.test(remote));
}

export interface GitSource {
  /** What `git fetch` is given. */
  remote: string;
  /** Branch, tag, full ref or commit; empty: the remote's HEAD. */
  ref: string;
  /** Directory of the repository to take (cleaned, no leading slash); empty: the whole tree. */
  subdir: string;
  keepGitDir: boolean;
  /** `git.checksum` (ADD --checksum): the fetched commit id must start with it. */
  checksum?: string;
}

/**
 * Parses `git://REMOTE[#REF[:SUBDIR]]` as BuildKit does: the remote is
 * `git.fullurl` when set, else `https://REMOTE` (an identifier that already
 * names a transport keeps it); `git.subdir` is used when the fragment has no
 * subdir; `git.keepgitdir=true` keeps `.git` (not with a subdir).
 */
export function parseGitSource(identifier: string, attrs: Record<string, string>): GitSource {
  const rest = identifier.replace(/^git:\/\//, '');
  const hash = rest.indexOf('#');
  const bare = hash < 0 ? rest : rest.slice(0, hash);
  const fragment = hash < 0 ? '' : rest.slice(hash + 1);
  const colon = fragment.indexOf(':');
  const ref = colon < 0 ? fragment : fragment.slice(0, colon);
  let subdir = colon < 0 ? '' : fragment.slice(colon + 1);
  if (!subdir) subdir = attrs[GIT_ATTRS.subdir] ?? '';
  subdir = path.posix.normalize(`/${subdir}`).slice(1).replace(/\/+$/, '');
  if (subdir === '.') subdir = '';
  const remote = attrs[GIT_ATTRS.fullUrl] || (/^(https?|ssh|git|file):\/\//.test(bare) || /^[^/]+@[^/]+:/.test(bare) ? bare : `https://${bare}`);
  if (!bare && !attrs[GIT_ATTRS.fullUrl]) throw new InvalidArgumentError(`git source "${identifier}" names no repository`, 'identifier');
  if (ref.startsWith('-')) throw new InvalidArgumentError(`git ref "${ref}" must not start with "-"`, 'identifier');
  const keep = attrs[GIT_ATTRS.keepGitDir];
  const checksum = attrs[GIT_ATTRS.checksum] || undefined;
  return { remote, ref, subdir, keepGitDir: keep === 'true' || keep === '1', ...(checksum ? { checksum } : {}) };
}

export interface GitSourceParams {
  identifier: string;
  attrs: Record<string, string>;
  /** Default "git" from PATH. */
  gitBinary?: string;
  /** Relays to the build client's SSH agents (SessionService.ForwardSsh), for SSH remotes. */
  sshForward?: SshForwarder;
  logger?: Logger;
}

/**
 * The ssh command git runs for an SSH remote, as BuildKit's git source: no
 * config file and no key of the daemon's user (HOME is a scratch dir), only
 * the forwarded agent; the host key is checked against `git.knownsshhosts`
 * when the op carries it, else (as BuildKit without known hosts) not at all.
 */
async function sshEnv(src: GitSource, attrs: Record<string, string>, p: GitSourceParams, tmp: string, signal?: AbortSignal): Promise<{ env: Record<string, string>; agent?: SshAgentSocket; missing?: string }> {
  const opts = ['-F', '/dev/null', '-o', 'BatchMode=yes'];
  const known = attrs[GIT_ATTRS.knownSshHosts];
  if (known) {
    const file = path.join(tmp, 'known_hosts');
    await writeFile(file, known.endsWith('\n') ? known : `${known}\n`, { mode: 0o600 });
    opts.push('-o', `UserKnownHostsFile=${file}`, '-o', 'StrictHostKeyChecking=yes');
  } else opts.push('-o', 'UserKnownHostsFile=/dev/null', '-o', 'StrictHostKeyChecking=no');
  const env: Record<string, string> = { GIT_SSH_COMMAND: `ssh ${opts.join(' ')}` };
  if (!isSshRemote(src.remote)) return { env };
  const id = attrs[GIT_ATTRS.mountSshSock] || 'default';
  if (!p.sshForward || !(await agentForwarded(p.sshForward, id, signal))) return { env, missing: id };
  const agent = await SshAgentSocket.listen(path.join(tmp, 'agent.sock'), { id, uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, mode: 0o600, forward: p.sshForward, logger: p.logger ?? silentLogger() });
  return { env: { ...env, SSH_AUTH_SOCK: agent.path }, agent };
}


/**
 * `git://...`: fetches the ref (shallow when the remote allows it) with the
 * git CLI into a temporary repository, checks it out with submodules, and
 * copies the tree (or `subdir` of it) into a new snapshot; `.git` is left
 * out unless `git.keepgitdir` is set. Every entry's mtime is set to the
 * commit time, so the same commit always gives the same tree. Publishes
 * the fetch as a "fetching REMOTE" status.
 */
export async function runGitSource(ctx: OpContext, p: GitSourceParams): Promise<OpResult> {
  const src = parseGitSource(p.identifier, p.attrs);
  const shown = redact(src.remote);
  const statusId = `fetching ${shown}${src.ref ? `#${src.ref}` : ''}`;
  const startedMs = Date.now();
  const tmp = await mkdtemp(path.join(tmpdir(), 'kiln-git-'));
  const key = newSnapshotKey(ctx.digest, 'git');
  let prepared = false;
  let ssh: Awaited<ReturnType<typeof sshEnv>> | undefined;
  try {
    ssh = await sshEnv(src, p.attrs, p, tmp, ctx.signal);
    const extraEnv = ssh.env;
    const missing = ssh.missing;
    const git = (args: string[], cwd = tmp) =>
      run(p.gitBinary ?? 'git', args, cwd, tmp, ctx.signal, extraEnv).catch((err: unknown) => {
        // An SSH remote without a forwarded agent: say how to forward one.
        if (missing && err instanceof OpFailure) throw new OpFailure(`${err.message} (no SSH agent "${missing}" was forwarded for ${shown}: pass --ssh ${missing})`);
        throw err;
      });
    await git(['init', '-q', 'repo']);
    const repo = path.join(tmp, 'repo');
    await git(['remote', 'add', 'origin', src.remote], repo);
    const want = src.ref || 'HEAD';
    let commit: string;
    try {
      await git(['fetch', '-q', '--depth=1', '--no-tags', 'origin', want], repo);
      commit = (await git(['rev-parse', '--verify', '-q', 'FETCH_HEAD^{commit}'], repo)).trim();
    } catch {
      // A commit the server will not serve by id in a shallow fetch: fetch every branch and tag, then look for it.
      await git(['fetch', '-q', '--tags', 'origin', '+refs/heads/*:refs/remotes/origin/*'], repo);
      commit = await firstCommit(git, repo, [want, `origin/${want}`, `refs/tags/${want}`]);
    }
    if (src.checksum && !commit.startsWith(src.checksum)) {
      throw new OpFailure(`failed to fetch ${shown}${src.ref ? ` at ${src.ref}` : ''}: expected checksum to match ${src.checksum}, got ${commit}`);
    }
    await git(['checkout', '-q', '--detach', commit], repo);
    if (readdirSync(repo).includes('.gitmodules')) await git(['submodule', 'update', '-q', '--init', '--recursive', '--depth=1'], repo);
    const commitTime = Number((await git(['show', '-s', '--format=%ct', commit], repo)).trim());

    let from = repo;
    if (src.subdir) {
      from = await resolveInRoot(repo, src.subdir, { followFinalSymlink: true }).catch(() => '');
      if (!from || !lstatSync(from, { throwIfNoEntry: false })?.isDirectory()) {
        throw new OpFailure(`failed to fetch ${shown}: subdirectory "${src.subdir}" does not exist at ${src.ref || 'HEAD'}`);
      }
    } else if (!src.keepGitDir) {
      await rm(path.join(repo, '.git'), { recursive: true, force: true });
    } else {
      // Keep a usable repository: name the checked-out ref like BuildKit does.
      if (src.ref && !/^[0-9a-f]{40}$/.test(src.ref)) await git(['update-ref', `refs/heads/${src.ref.replace(/^refs\/heads\//, '')}`, commit], repo).catch(() => undefined);
    }
    setTimes(from, commitTime, src.subdir ? new Set(['.git']) : new Set());

    const active = await ctx.snapshotter.prepare(key, undefined, { signal: ctx.signal });
    prepared = true;
    const entries = readdirSync(from).filter((n) => !(src.subdir && n === '.git'));
    if (entries.length > 0) await run('cp', ['-a', '--', ...entries.map((n) => path.join(from, n)), `${active.path}/`], tmp, tmp, ctx.signal);
    const id = await ctx.snapshotter.commit(key);
    await ctx.progress.status({ id: statusId, name: statusId, current: 0, startedMs, completedMs: Date.now() });
    return [id];
  } catch (err) {
    if (prepared) await ctx.snapshotter.remove(key).catch(() => undefined);
    if (ctx.signal?.aborted) throw new CanceledError(`fetch of ${shown} canceled`, { cause: err });
    if (err instanceof OpFailure || err instanceof InvalidArgumentError) throw err;
    throw OpFailure.wrap(`failed to fetch ${shown}${src.ref ? ` at ${src.ref}` : ''}`, err);
  } finally {
    await ssh?.agent?.close().catch(() => undefined);
    await rm(tmp, { recursive: true, force: true });
  }
}

async function firstCommit(git: (args: string[], cwd?: string) => Promise<string>, repo: string, names: string[]): Promise<string> {
  for (const n of names) {
    const c = await git(['rev-parse', '--verify', '-q', `${n}^{commit}`], repo).catch(() => '');
    if (c.trim()) return c.trim();
  }
  throw new OpFailure(`no branch, tag or commit "${names[0]}" in the repository`);
}

/** Sets the mtime of everything below `dir` (and `dir`) to `sec`, skipping top-level names in `skip`. */
function setTimes(dir: string, sec: number, skip: Set<string>): void {
  const t = new Date(sec * 1000);
  const walk = (abs: string, top: boolean) => {
    for (const name of readdirSync(abs)) {
      if (top && skip.has(name)) continue;
      const p = path.join(abs, name);
      if (lstatSync(p).isDirectory()) walk(p, false);
      lutimesSync(p, t, t);
    }
  };
  walk(dir, true);
}

const GENERIC_GIT_LINES = ['Could not read from remote repository', 'Please make sure you have the correct access rights', 'and the repository exists'];

function run(bin: string, args: string[], cwd: string, home: string, signal?: AbortSignal, extraEnv: Record<string, string> = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      bin,
      args,
      {
        cwd,
        signal,
        maxBuffer: 16 << 20,
        env: {
          PATH: process.env.PATH ?? '/usr/bin:/bin',
          HOME: home,
          GIT_TERMINAL_PROMPT: '0',
          GIT_CONFIG_NOSYSTEM: '1',
          GIT_ASKPASS: 'true',
          GIT_SSH_COMMAND: 'ssh -o BatchMode=yes',
          ...extraEnv,
        },
      },
      (err, stdout, stderr) => {
        if (err) {
          // git ends an SSH failure with a generic access hint; the line before it (ssh's) says what failed.
          const lines = String(stderr).trim().split('\n').filter(Boolean);
          const specific = lines.filter((l) => !GENERIC_GIT_LINES.some((g) => l.includes(g)));
          const reason = specific.at(-1) ?? lines.at(-1) ?? err.message;
          reject(new OpFailure(reason.replace(/^(fatal|error): /, '')));
        } else resolve(String(stdout));
      },
    );
  });
}

/** The remote without credentials, for messages and events. */
function redact(remote: string): string {
  try {
    const u = new URL(remote);
    if (!u.username && !u.password) return remote;
    u.username = '';
    u.password = '';
    return u.href;
  } catch {
    return remote;
  }
}
