import { resolve } from 'node:path';
import { PROGRESS_MODES, type ProgressMode } from '../build/build-options.js';
import type { CliIo } from '../cli-io.js';
import { DAEMON_FLAG_SPECS, resolveDaemonAddress, tlsFlagsOf } from '../daemon.js';
import { parseFlags, type FlagSpecs } from '../flags/flag-parser.js';
import { UsageError } from '../flags/usage-error.js';
import { FUNCTION_NAMES } from './hcl-functions.js';
import { listTargets, parseListFlag } from './list.js';
import { loadBakeConfig, readBakeFiles } from './load.js';
import { printBake } from './print.js';
import { applyRemoteInput, isRemoteUrl, readRemoteBakeFiles, remoteInput } from './remote-definition.js';
import { readTargets } from './resolve.js';
import { runBakeBuilds } from './run.js';

export const BAKE_USAGE = `Usage:  kiln bake [OPTIONS] [URL [CONTEXT_URL]] [TARGET...]

Build from a file

Options:
      --addr string              Daemon address (unix:///PATH or tcp://HOST:PORT; env KILN_ADDR)
      --builder string           Override the configured builder instance (env KILN_BUILDER)
  -f, --file stringArray         Build definition file (default: BUILDX_BAKE_FILE, else compose.yaml, docker-bake.hcl, ... in the current directory)
  -h, --help                     Print usage
      --list string              List targets ("targets" or "type=targets,format=json")
      --load                     Shorthand for "--set=*.output=type=docker"
      --metadata-file string     Write build result metadata to a file
      --no-cache                 Do not use cache when building the image
      --print                    Print the options without building
      --progress string          Set type of progress output ("auto", "plain", "tty", "rawjson", "quiet") (default "auto")
      --pull                     Always attempt to pull all referenced images
      --push                     Shorthand for "--set=*.output=type=registry"
      --set stringArray          Override target value (e.g., "targetpattern.key=value")
      --tlscacert string         CA certificate of the cluster, for a TCP daemon (env KILN_TLS_CACERT)
      --tlscert string           Client certificate (env KILN_TLS_CERT)
      --tlskey string            Client key (env KILN_TLS_KEY)

A git or http(s) URL first reads the bake files from that remote (buildx's remote
definition): targets' contexts default to it, relative ones are its directories,
and cwd://PATH is a directory here (-f cwd://FILE: a local bake file).
Variables are overridden from the environment (VAR=value kiln bake).
HCL functions: ${FUNCTION_NAMES.join(', ')}.
`;

const BAKE_FLAGS = {
  file: { kind: 'list', short: 'f' },
  set: { kind: 'list' },
  print: { kind: 'bool' },
  list: { kind: 'string' },
  load: { kind: 'bool' },
  push: { kind: 'bool' },
  'metadata-file': { kind: 'string' },
  progress: { kind: 'string' },
  'no-cache': { kind: 'bool' },
  pull: { kind: 'bool' },
  ...DAEMON_FLAG_SPECS,
  help: { kind: 'bool', short: 'h' },
} as const satisfies FlagSpecs;

/** buildx's BAKE_LOCAL_PLATFORM: this machine's platform as containerd formats it. */
function localPlatform(): string {
  const arch = ({ x64: 'amd64', arm64: 'arm64/v8', arm: 'arm/v7', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' } as Record<string, string>)[process.arch] ?? process.arch;
  return `linux/${arch}`;
}

/** buildx's BUILDX_BAKE_FILE: files when no -f is given, split on BUILDX_BAKE_FILE_SEPARATOR (default ":"). */
export function envBakeFiles(env: Readonly<Record<string, string | undefined>>): string[] {
  const list = env.BUILDX_BAKE_FILE;
  if (list === undefined) return [];
  return list
    .split(env.BUILDX_BAKE_FILE_SEPARATOR || ':')
    .map((f) => f.trim())
    .filter((f) => f !== '');
}

/**
 * `kiln bake [TARGET...]`: reads the bake files, resolves the targets
 * (groups, inherits, matrix, `--set`), then prints them (`--print`) or
 * builds them all at once (run.ts). Returns the exit code.
 */
export async function runBake(argv: readonly string[], io: CliIo): Promise<number> {
  const { flags, args } = parseFlags(argv, BAKE_FLAGS);
  if (flags.help) {
    io.stdout.write(BAKE_USAGE);
    return 0;
  }
  const progress = (flags.progress ?? (io.vars.BUILDKIT_PROGRESS || 'auto')) as ProgressMode;
  if (!PROGRESS_MODES.includes(progress)) throw new UsageError(`invalid argument "${flags.progress}" for "--progress" flag: want ${PROGRESS_MODES.join(', ')}`, '--progress');
  if (flags['metadata-file'] === '') throw new UsageError('flag needs a non-empty argument: --metadata-file', '--metadata-file');
  if (flags.print && flags.list !== undefined) throw new UsageError('--print and --list are mutually exclusive', '--list');
  const list = flags.list === undefined ? undefined : parseListFlag(flags.list);
  if (!flags.print && !list) resolveDaemonAddress(flags.addr, io.vars, flags.builder);

  // buildx turns these flags into overrides of every target, after the user's --set.
  const sets = [...flags.set];
  if (flags.push) sets.push('*.push=true');
  if (flags.load) sets.push('*.load=true');
  if (flags['no-cache']) sets.push('*.no-cache=true');
  if (flags.pull) sets.push('*.pull=true');

  // buildx: `bake URL [CONTEXT_URL] [TARGET...]` reads the definition from URL; a second URL is the command's context.
  let targets = args;
  let remote: ReturnType<typeof remoteInput> | undefined;
  let cmdContext = 'cwd://';
  if (targets[0] !== undefined && isRemoteUrl(targets[0])) {
    remote = remoteInput(targets[0]);
    targets = targets.slice(1);
    if (targets[0] !== undefined && isRemoteUrl(targets[0])) {
      cmdContext = targets[0];
      targets = targets.slice(1);
    }
  }
  const names = flags.file.length > 0 ? flags.file : envBakeFiles(io.vars);
  const files = remote
    ? await readRemoteBakeFiles(remote, names, io, { progress, addr: flags.addr, builder: flags.builder, tls: tlsFlagsOf(flags) })
    : readBakeFiles(names, io.cwd);
  const config = await loadBakeConfig(files, { env: io.vars, builtins: { BAKE_CMD_CONTEXT: cmdContext, BAKE_LOCAL_PLATFORM: localPlatform() } });
  if (list) {
    io.stdout.write(listTargets(config, list.format));
    return 0;
  }
  const resolved = readTargets(config, targets, sets, io.vars);
  if (remote) applyRemoteInput(resolved.targets, remote);
  // buildx: SOURCE_DATE_EPOCH from the environment is a build arg of every target that has none.
  const epoch = io.vars.SOURCE_DATE_EPOCH;
  if (epoch) for (const t of resolved.targets.values()) if (t.args?.SOURCE_DATE_EPOCH === undefined) (t.args ??= {}).SOURCE_DATE_EPOCH = epoch;

  if (flags.print) {
    io.stdout.write(printBake(resolved));
    return 0;
  }
  return runBakeBuilds(
    {
      targets: resolved.targets,
      progress,
      metadataFile: flags['metadata-file'] === undefined ? undefined : resolve(io.cwd, flags['metadata-file']),
      addr: flags.addr,
      builder: flags.builder,
      tls: tlsFlagsOf(flags),
    },
    io,
  );
}
