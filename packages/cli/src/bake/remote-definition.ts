import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, join, posix, resolve } from 'node:path';
import { asKilnError, InvalidArgumentError } from '@kiln/common';
import { parseGitUrl } from '@kiln/dockerfile';

type GitUrl = NonNullable<ReturnType<typeof parseGitUrl>>;
import { FileChain, git, http, marshal, State } from '@kiln/llb';
import { newBuildId } from '../build/build-command.js';
import type { ProgressMode } from '../build/build-options.js';
import type { CliIo } from '../cli-io.js';
import { connectDaemon, type TlsFlags } from '../daemon.js';
import { UsageError } from '../flags/usage-error.js';
import { createProgressPrinter } from '../progress/progress.js';
import { attachSession } from '../session/session-client.js';
import { DEFAULT_BAKE_FILES, readBakeFiles, type BakeFile } from './load.js';
import type { Target } from './target.js';

/** buildx's prefix for a path of the directory bake runs in, when the definition is remote. */
export const CWD_PREFIX = 'cwd://';

/** A remote bake definition (`kiln bake URL`): a git repository or an http(s) archive. */
export type RemoteInput = { url: string; kind: 'git'; git: GitUrl } | { url: string; kind: 'http' };

/** buildx's IsRemoteURL: an http(s) URL or a git remote (`git://`, `ssh://`, `git@HOST:PATH`). */
export function isRemoteUrl(v: string): boolean {
  return /^(https?|git|ssh|git\+ssh):\/\//i.test(v) || /^[A-Za-z0-9_.-]+@[A-Za-z0-9.-]+:[^/]/.test(v);
}

/** The remote a `kiln bake URL` reads its files from; a git URL when it parses as one, else an http(s) download. */
export function remoteInput(url: string): RemoteInput {
  const g = parseGitUrl(url);
  if (g) return { url, kind: 'git', git: g };
  if (/^https?:\/\//i.test(url)) return { url, kind: 'http' };
  throw new UsageError(`"${url}" is not a git or http(s) URL`, 'URL');
}

/** The state holding the remote's tree: the checkout (at REF, SUBDIR) or the unpacked download. */
function remoteState(input: RemoteInput): State {
  if (input.kind === 'git') {
    const g = input.git;
    return git(g.remote, g.ref, { fullUrl: g.fullUrl, subdir: g.subdir || undefined, description: `[internal] load git source ${input.url}` });
  }
  const download = http(input.url, { filename: 'context', description: '[internal] load remote bake definition' });
  return FileChain.start()
    .copy(download, '/context', '/', { attemptUnpackDockerCompatibility: true, createDestPath: true })
    .apply(State.scratch(), { description: '[internal] unpack remote bake definition' });
}

export interface RemoteFetchOptions {
  progress: ProgressMode;
  addr: string | undefined;
  builder: string | undefined;
  tls: TlsFlags;
}

/**
 * Reads the bake files of a remote definition as buildx does: the daemon
 * fetches the remote (a build of one git or http source), and only the
 * files bake reads (the `-f` names, else the default names) are copied out
 * to a scratch directory through the session. A `-f cwd://PATH` is read
 * from the local directory instead.
 */
export async function readRemoteBakeFiles(input: RemoteInput, names: readonly string[], io: CliIo, opts: RemoteFetchOptions): Promise<BakeFile[]> {
  const remoteNames = names.length === 0 ? [...DEFAULT_BAKE_FILES] : names.filter((n) => !n.startsWith(CWD_PREFIX));
  for (const n of remoteNames) {
    if (n === '-' || isAbsolute(n) || posix.normalize(n).startsWith('..')) throw new UsageError(`bake file "${n}" must be a path inside the remote definition (or cwd://PATH for a local one)`, '--file');
  }
  const dir = mkdtempSync(join(tmpdir(), 'kiln-bake-remote-'));
  try {
    if (remoteNames.length > 0) await exportRemoteFiles(input, remoteNames, dir, io, opts);
    const out: BakeFile[] = [];
    if (names.length === 0) {
      try {
        return readBakeFiles([], dir);
      } catch (err) {
        if (err instanceof UsageError) throw new UsageError(`couldn't find a bake definition in ${input.url}`, '--file', { cause: err });
        throw err;
      }
    }
    for (const n of names) {
      if (n.startsWith(CWD_PREFIX)) out.push(...readBakeFiles([n.slice(CWD_PREFIX.length)], io.cwd));
      else {
        let data: string;
        try {
          data = readFileSync(join(dir, n), 'utf8');
        } catch {
          throw new UsageError(`failed to read bake file ${n}: not found in ${input.url}`, '--file');
        }
        out.push({ name: n, data });
      }
    }
    return out;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function exportRemoteFiles(input: RemoteInput, names: readonly string[], dir: string, io: CliIo, opts: RemoteFetchOptions): Promise<void> {
  const files = FileChain.start()
    .copy(remoteState(input), '/', '/', { dirCopyContents: true, includePatterns: [...names], allowEmptyWildcard: true, createDestPath: true })
    .apply(State.scratch(), { description: '[internal] read remote bake definition' });
  const conn = await connectDaemon({ addr: opts.addr, builder: opts.builder, tls: opts.tls, env: io.vars, daemonCommand: io.daemonCommand, signal: io.signal });
  const ref = newBuildId();
  const sessionId = newBuildId();
  const abort = new AbortController();
  const onAbort = () => abort.abort(io.signal.reason);
  io.signal.addEventListener('abort', onAbort, { once: true });
  const printer = createProgressPrinter(opts.progress, io.stderr, { term: io.vars.TERM });
  const statusAbort = new AbortController();
  const status = (async () => {
    try {
      for await (const s of conn.control.status({ ref }, { signal: AbortSignal.any([abort.signal, statusAbort.signal]) })) printer.write(s);
    } catch {
      // the stream ends with the build or is cut below
    }
  })();
  // As buildx: an SSH remote is read with the user's agent (BUILDX_BAKE_GIT_SSH, else SSH_AUTH_SOCK) as "default".
  const agent = io.vars.BUILDX_BAKE_GIT_SSH || io.vars.SSH_AUTH_SOCK;
  const sshAgents = agent ? [{ id: 'default', socket: agent }] : [];
  const session = attachSession(conn.session, {
    sessionId,
    dirs: [],
    outputs: [{ id: 'bake-files', kind: 'dir', path: dir }],
    sshAgents,
    stdout: io.stdout,
    logger: io.logger.child({ session: sessionId }),
    signal: abort.signal,
  });
  try {
    await session.ready();
    await conn.control.solve(
      { ref, sessionId, definition: marshal(files), exporters: [{ type: 'local', attrs: { 'session.output': 'bake-files' } }] },
      { signal: abort.signal },
    );
  } catch (err) {
    throw new InvalidArgumentError(`failed to read the remote bake definition ${input.url}: ${asKilnError(err).message}`, 'URL', { cause: err });
  } finally {
    io.signal.removeEventListener('abort', onAbort);
    session.close();
    const tail = setTimeout(() => statusAbort.abort(), 1000);
    await status;
    clearTimeout(tail);
    printer.close();
  }
}

/**
 * A target's context (or named context) in a remote definition, as buildx
 * resolves it: "." (or none) is the remote itself; a relative path is that
 * directory of the remote (for git, `URL#REF:SUBDIR/PATH`); `cwd://PATH`,
 * URLs, `target:` and `docker-image://` values stay as they are.
 */
export function contextInRemote(value: string | undefined, input: RemoteInput, what: string): string {
  if (value === undefined || value === '.' || value === './' || value === '') return input.url;
  if (value.startsWith(CWD_PREFIX) || value.startsWith('target:') || value.startsWith('docker-image://') || value.startsWith('oci-layout://') || isRemoteUrl(value)) return value;
  const rel = posix.normalize(value.replace(/^\/+/, ''));
  if (rel === '..' || rel.startsWith('../')) throw new UsageError(`${what} "${value}" is outside of the remote definition (use ${CWD_PREFIX}PATH for a local directory)`, 'context');
  if (rel === '.') return input.url;
  if (input.kind !== 'git') throw new UsageError(`${what} "${value}": a subdirectory of an http(s) remote definition is not supported (use ${CWD_PREFIX}PATH or a URL)`, 'context');
  const g = input.git;
  return `${g.fullUrl}#${g.ref}:${posix.join(g.subdir || '.', rel)}`;
}

/** Rewrites every target's contexts for a remote definition (before --print and the builds). */
export function applyRemoteInput(targets: Map<string, Target>, input: RemoteInput): void {
  for (const t of targets.values()) {
    t.context = contextInRemote(t.context, input, `target "${t.name}": context`);
    if (t.contexts) for (const [k, v] of Object.entries(t.contexts)) t.contexts[k] = contextInRemote(v, input, `target "${t.name}": context "${k}"`);
  }
}

/** A bake path value: `cwd://PATH` is PATH in `cwd`; other paths are resolved against `cwd` as before. */
export function localPath(cwd: string, value: string): string {
  return resolve(cwd, value.startsWith(CWD_PREFIX) ? value.slice(CWD_PREFIX.length) || '.' : value);
}
