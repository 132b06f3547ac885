/** RUN to an ExecOp: shell/exec form, heredocs, --mount, --network, --security (BuildKit's dispatchRun). */
import { llb } from '@kiln/api';
import { SourceError } from '@kiln/common';
import { execState, FileChain, State, type ExecInit, type ExecMountInit, type ExecSecretInit, type ExecSshInit, type StateOptions } from '@kiln/llb';
import { posix } from 'node:path';
import { MountError, parseRunMount, type RunMount } from '../instructions/run-mount.js';
import type { RunCommand } from '../instructions/types.js';
import { chompHeredocContent, parseHeredoc } from '../parser/heredoc.js';
import type { CopyContext } from './copy.js';
import { runEnvList, type StageState } from './stage-state.js';

const SHARING: Record<string, llb.CacheSharing> = {
  shared: llb.CacheSharing.SHARED,
  private: llb.CacheSharing.PRIVATE,
  locked: llb.CacheSharing.LOCKED,
};

export async function convertRun(
  ctx: CopyContext,
  s: StageState,
  cmd: RunCommand,
  meta: (suffix?: string, maskedEnv?: readonly string[]) => StateOptions,
  word: (w: string) => string,
): Promise<{ historyArgs: string }> {
  const fail = (msg: string): never => {
    throw new SourceError(msg, ctx.filename, cmd.line);
  };
  if (cmd.devices.length > 0) fail('RUN --device is not supported');
  const security = securityMode(cmd.security, fail);
  const network = networkMode(cmd.network || ctx.forceNetwork || '', fail);

  const mounts: ExecMountInit[] = [];
  const secrets: ExecSecretInit[] = [];
  const ssh: ExecSshInit[] = [];
  let cmdLine = cmd.cmdLine;
  let suffix = '';

  if (cmd.files.length > 0) {
    if (cmdLine.length !== 1 || !cmd.prependShell) fail(`parsing produced an invalid run command: ${JSON.stringify(cmdLine)}`);
    const first = cmd.files[0]!;
    const data = first.chomp ? chompHeredocContent(first.data) : first.data;
    if (parseHeredoc(cmdLine[0]!.trim())) {
      if (s.platform.os !== 'windows' && data.startsWith('#!')) {
        // A script with a shebang: mount it as an executable file and run it.
        const script = FileChain.start().mkfile(`/${first.name}`, 0o755, new TextEncoder().encode(data)).apply(State.scratch(), { description: '[internal] preparing inline document' });
        mounts.push({ dest: '/dev/pipes/', state: script, selector: '/', readonly: true });
        cmdLine = [posix.join('/dev/pipes/', first.name)];
      } else {
        cmdLine = [data];
      }
      suffix = ` (${summarizeHeredoc(first.data)})`;
    } else {
      // Several heredocs or a command around one: the shell reads them itself.
      let full = cmdLine[0]!;
      for (const f of cmd.files) full += `\n${f.data}${f.name}`;
      cmdLine = [full];
    }
  }

  // Secrets exposed as env variables show as `****` in the step's name.
  const maskedEnv: string[] = [];
  for (const raw of cmd.mounts) {
    let m: RunMount;
    try {
      m = parseRunMount(raw, word);
    } catch (err) {
      if (err instanceof MountError) fail(`RUN --mount=${raw}: ${err.message}`);
      throw err;
    }
    if (m.type === 'secret' && m.env) maskedEnv.push(m.env);
    await addMount(ctx, s, m, cmd.line, { mounts, secrets, ssh }, fail);
  }

  const args = cmd.prependShell ? [...(s.config.config.Shell ?? ['/bin/sh', '-c']), ...cmdLine] : cmdLine;
  s.state = execState(
    s.state,
    args,
    {
      env: runEnvList(s),
      cwd: s.workdir,
      user: s.config.config.User ?? '',
      network,
      security,
      mounts,
      secrets,
      ssh,
      hostname: ctx.hostname,
      extraHosts: ctx.extraHosts,
      ulimits: ctx.ulimits,
      shmSizeBytes: ctx.shmSizeBytes,
      proxyEnv: proxyEnvFromBuildArgs(ctx.buildArgs),
      sortMounts: true,
    },
    meta(suffix, maskedEnv),
  );
  return { historyArgs: runCommandString(args, s) };
}

async function addMount(
  ctx: CopyContext,
  s: StageState,
  m: RunMount,
  line: number,
  out: { mounts: ExecMountInit[]; secrets: ExecSecretInit[]; ssh: ExecSshInit[] },
  fail: (msg: string) => never,
): Promise<void> {
  if (m.type === 'secret') {
    const id = m.source || m.id || (m.target ? posix.basename(m.target) : '');
    if (!id) fail('secret mount: one of source, target required');
    const dest = m.env === undefined ? m.target || `/run/secrets/${posix.basename(id)}` : m.target || undefined;
    const fileOpt = m.uid !== undefined || m.gid !== undefined || m.mode !== undefined;
    out.secrets.push({
      id,
      dest,
      env: m.env,
      uid: m.uid ?? 0,
      gid: m.gid ?? 0,
      mode: fileOpt ? (m.mode ?? 0o400) : 0o400,
      optional: !m.required,
    });
    return;
  }
  if (m.type === 'ssh') {
    out.ssh.push({ id: m.id || 'default', dest: m.target || undefined, uid: m.uid ?? 0, gid: m.gid ?? 0, mode: m.mode ?? 0o600, optional: !m.required });
    return;
  }
  let from = m.from;
  if (!from && m.type === 'cache') from = 'scratch';
  let st: State = m.type === 'tmpfs' ? State.scratch() : from ? await ctx.sourceState(s, from, line, m.target) : ctx.context;
  const target = posix.isAbsolute(m.target) ? posix.normalize(m.target) : posix.join('/', s.workdir, m.target);
  if (target === '/') fail(`invalid mount target "${m.target || '/'}"`);
  const mount: ExecMountInit = { dest: target, state: st, readonly: m.readOnly };
  if (m.type === 'tmpfs') {
    mount.tmpfs = true;
    mount.tmpfsSize = BigInt(m.sizeLimit);
    mount.readonly = m.readOnly;
  }
  if (m.type === 'cache') {
    const id = m.id || posix.normalize(m.target);
    mount.cache = { id: `/${id}`, sharing: SHARING[m.sharing ?? 'shared']! };
  }
  const src = posix.join('/', m.source);
  if (src !== '/') {
    mount.selector = src;
  } else if (m.uid !== undefined || m.gid !== undefined || m.mode !== undefined) {
    // Cache directory owner/mode: BuildKit prepares it with a mkdir on the mount's source.
    st = FileChain.start()
      .mkdir('/cache', m.mode ?? 0o755, { owner: { user: { user: { case: 'id', value: m.uid ?? 0 } }, group: { user: { case: 'id', value: m.gid ?? 0 } } } })
      .apply(st, { description: '[internal] settings cache mount permissions' });
    mount.state = st;
    mount.selector = '/cache';
  }
  out.mounts.push(mount);
  if (!from) ctx.contextPaths.add(src.slice(1) || '.');
}

function securityMode(value: string, fail: (msg: string) => never): llb.SecurityMode {
  switch (value) {
    case '':
    case 'sandbox':
      return llb.SecurityMode.UNSPECIFIED;
    case 'insecure':
      return llb.SecurityMode.INSECURE;
    default:
      return fail(`unsupported security mode "${value}": want sandbox or insecure`);
  }
}

function networkMode(value: string, fail: (msg: string) => never): llb.NetMode {
  switch (value) {
    case '':
    case 'default':
      return llb.NetMode.SANDBOX;
    case 'none':
      return llb.NetMode.NONE;
    case 'host':
      return llb.NetMode.HOST;
    default:
      return fail(`invalid RUN --network=${value}: want default, none or host`);
  }
}

/** The heredoc's first line for progress names, `...` when more follow (BuildKit's summarizeHeredoc). */
function summarizeHeredoc(doc: string): string {
  const lines = doc.trim().replace(/\r\n/g, '\n').split('\n');
  return lines.length > 1 ? `${lines[0]}...` : lines[0]!;
}

/** `|N K=V ... args` when the stage declared build args, as BuildKit's runCommandString. */
function runCommandString(args: string[], s: StageState): string {
  const seen = new Map<string, string>();
  for (const a of s.declaredArgs) seen.set(a.key, `${a.key}=${s.env.get(a.key) ?? a.value ?? ''}`);
  const prefix = seen.size > 0 ? [`|${seen.size}`, ...seen.values()] : [];
  return [...prefix, ...args].join(' ');
}

const PROXY_ARGS = { http_proxy: 'httpProxy', https_proxy: 'httpsProxy', ftp_proxy: 'ftpProxy', no_proxy: 'noProxy', all_proxy: 'allProxy' } as const;

/**
 * The proxy build args (HTTP_PROXY, https_proxy, ... in any case), as
 * BuildKit's proxyEnvFromBuildArgs: every RUN gets them without an ARG line,
 * outside its cache key, the image config and the history. With both cases
 * given, the one sorting last wins (lower case).
 */
export function proxyEnvFromBuildArgs(buildArgs: Record<string, string>): ExecInit['proxyEnv'] {
  let out: NonNullable<ExecInit['proxyEnv']> | undefined;
  for (const key of Object.keys(buildArgs).sort()) {
    const field = PROXY_ARGS[key.toLowerCase() as keyof typeof PROXY_ARGS];
    if (field) (out ??= {})[field] = buildArgs[key]!;
  }
  return out;
}
