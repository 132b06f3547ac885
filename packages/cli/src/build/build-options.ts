import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, dirname, isAbsolute, resolve } from 'node:path';
import { KilnError, parseAddress, parseIgnoreFile, parseRamBytes, parseUlimit, PatternMatcher, type Ulimit } from '@kiln/common';
import { parseLayoutRef, type LayoutRef } from '@kiln/registry';
import { parseCsv, parseCsvPairs } from '../flags/csv.js';
import { parseFlags, type FlagSpecs, type ParsedFlags } from '../flags/flag-parser.js';
import { UsageError } from '../flags/usage-error.js';
import { DAEMON_FLAG_SPECS, tlsFlagsOf, type TlsFlags } from '../daemon.js';
import { normalizePlatformFlag } from './platforms.js';

/** The flags of `kiln build`, as in DESIGN.md's CLI contract (buildx meanings). */
export const BUILD_FLAGS = {
  'add-host': { kind: 'list' },
  file: { kind: 'string', short: 'f' },
  tag: { kind: 'list', short: 't' },
  target: { kind: 'string' },
  frontend: { kind: 'string' },
  'build-arg': { kind: 'list' },
  'build-context': { kind: 'list' },
  label: { kind: 'list' },
  network: { kind: 'string' },
  platform: { kind: 'list' },
  secret: { kind: 'list' },
  ssh: { kind: 'list' },
  allow: { kind: 'list' },
  'worker-filter': { kind: 'list' },
  output: { kind: 'list', short: 'o' },
  push: { kind: 'bool' },
  load: { kind: 'bool' },
  'cache-from': { kind: 'list' },
  'cache-to': { kind: 'list' },
  'no-cache': { kind: 'bool' },
  'no-cache-filter': { kind: 'list' },
  'explain-cache': { kind: 'bool' },
  pull: { kind: 'bool' },
  progress: { kind: 'string' },
  'metadata-file': { kind: 'string' },
  iidfile: { kind: 'string' },
  quiet: { kind: 'bool', short: 'q' },
  annotation: { kind: 'list' },
  provenance: { kind: 'string' },
  sbom: { kind: 'string' },
  attest: { kind: 'list' },
  call: { kind: 'string' },
  print: { kind: 'string' },
  check: { kind: 'bool' },
  'shm-size': { kind: 'string' },
  ulimit: { kind: 'list' },
  ...DAEMON_FLAG_SPECS,
  help: { kind: 'bool', short: 'h' },
} as const satisfies FlagSpecs;

export type BuildFlags = ParsedFlags<typeof BUILD_FLAGS>;

/** What `--allow` accepts (buildx's names). */
export const BUILD_ENTITLEMENTS: readonly string[] = ['security.insecure', 'network.host'];

export const PROGRESS_MODES = ['auto', 'plain', 'tty', 'rawjson', 'quiet', 'none'] as const;
export type ProgressMode = (typeof PROGRESS_MODES)[number];

/** A named context (`--build-context NAME=VALUE`). */
export type NamedContext =
  /** A local directory, shared over the session as a dir called `name`. */
  | { name: string; kind: 'local'; path: string; ignore: string[] }
  /**
   * `oci-layout://PATH[:TAG][@DIGEST]`: an OCI image layout on this machine,
   * shared over the session as directory `store` (see `resolveLayoutContexts`).
   */
  | { name: string; kind: 'oci-layout'; path: string; tag?: string; digest?: string; store: string }
  /** Anything the daemon resolves itself: docker-image://, target:, git or http URLs. */
  | { name: string; kind: 'ref'; value: string };

export type SecretSpec = { id: string; kind: 'file'; path: string } | { id: string; kind: 'env'; name: string };

export interface SshSpec {
  id: string;
  /** Agent sockets or key files. */
  paths: string[];
}

/** Where a client-side output is written; the daemon writes it over the session. */
export interface OutputTarget {
  /** `--load`: the file is a temporary docker tarball the CLI loads into dockerd (`POST /images/load`) and then removes. */
  load?: boolean;
  /** Session output id ("out0", "out1", ...), sent as the exporter's `session.output` attr. */
  id: string;
  /** "dir" outputs receive a tar to unpack; "file" outputs the bytes as they are. */
  kind: 'dir' | 'file';
  /** Absolute path, or "-" for stdout. */
  path: string;
}

export interface ExportSpec {
  /** "local", "tar", "oci", "docker", "image" or "cacheonly". */
  type: string;
  /** Exporter attrs as sent (no `dest`; `session.output` is added for client-side outputs). */
  attrs: Record<string, string>;
  output?: OutputTarget;
}

export interface CacheSpec {
  type: string;
  attrs: Record<string, string>;
}

/** `kiln build` options, validated and defaulted once. */
export interface BuildOptions {
  /** Absolute context directory; empty for a remote context. */
  contextDir: string;
  /**
   * A git or http(s) URL given as the build context (buildx's remote
   * context): sent as the frontend attr `context`, fetched by the daemon;
   * no context dir is shared.
   */
  remoteContext: string | undefined;
  dockerfile: {
    /** Absolute path of the Dockerfile; empty when it is read from a remote context. */
    path: string;
    /** Its directory, shared as the "dockerfile" dir; empty when the Dockerfile is in the remote context. */
    dir: string;
    /** Its base name, sent as the `filename` frontend attr. */
    filename: string;
  };
  /** The ignore file applied to the context (`<Dockerfile>.dockerignore` wins over `.dockerignore`), if any. */
  ignoreFile: string | undefined;
  /** Its patterns; empty without one. */
  contextIgnore: string[];
  tags: string[];
  target: string | undefined;
  /** `--frontend NAME` (buildctl's flag): the frontend to run instead of the Dockerfile frontend (`dockerfile.v0`). */
  frontend: string | undefined;
  /** Build args in flag order; `--build-arg K` took K from the environment (skipped when unset). */
  buildArgs: Record<string, string>;
  /** `--label K=V`: image labels set over the Dockerfile's (frontend attrs `label:K`). */
  labels: Record<string, string>;
  /** `--network`: the default network of every RUN (`none` or `host`); undefined for the default sandbox. */
  network: 'none' | 'host' | undefined;
  namedContexts: NamedContext[];
  /** Normalized platforms, deduplicated, in order. */
  platforms: string[];
  secrets: SecretSpec[];
  ssh: SshSpec[];
  /** `--add-host host:ip`: extra /etc/hosts entries of every RUN. */
  extraHosts: { host: string; ip: string }[];
  /** `--ulimit name=soft[:hard]`: resource limits of every RUN. */
  ulimits?: Ulimit[];
  /** `--shm-size`: /dev/shm of every RUN, in bytes. */
  shmSizeBytes?: number;
  /** `--allow`: entitlements granted to the build (each also needs the daemon's permission). */
  entitlements: string[];
  /** `--worker-filter`: filters the worker running the build must match, all of them (`labels.KEY==VALUE`, `id==ID`; checked by the daemon). */
  workerFilters: string[];
  /** Exporters, `--push`/`--load` folded in; empty means the result stays in the build cache. */
  exports: ExportSpec[];
  cacheFrom: CacheSpec[];
  cacheTo: CacheSpec[];
  noCache: boolean;
  /** Stages whose steps skip the cache (`--no-cache-filter`, comma lists allowed). */
  noCacheFilter: string[];
  /** `--explain-cache`: after the build, print why each step that ran missed the cache. */
  explainCache: boolean;
  /** `--pull`: look base images up in the registry again (a tag moved a moment ago is seen). */
  pull: boolean;
  progress: ProgressMode;
  /** Absolute path for the metadata JSON, if asked. */
  metadataFile: string | undefined;
  /** `--iidfile`: absolute path the image id is written to. */
  iidFile: string | undefined;
  /** `-q/--quiet`: no progress; the image id (or nothing) on stdout. */
  quiet: boolean;
  /** `--provenance`, `--attest type=provenance,...`: BuildKit's `attest:provenance` frontend attr value (e.g. `mode=max`). */
  attests: Record<string, string>;
  /** buildx `--call` (`--check` = `--call=check`): the frontend subrequest to make instead of a build; undefined builds. */
  call: 'targets' | 'check' | 'outline' | undefined;
  /** `--call NAME,format=json`: print the answer's JSON; `ignorestatus=true`: exit 0 even when the check found something. */
  callFormat?: 'json';
  callIgnoreStatus?: boolean;
  /** `--addr` as given (validated); KILN_ADDR and the default are resolved by daemon.ts. */
  addr: string | undefined;
  /** `--builder` as given; KILN_BUILDER and the current builder are resolved by daemon.ts. */
  builder: string | undefined;
  /** `--tlscacert`/`--tlscert`/`--tlskey` as given; KILN_TLS_* are resolved by daemon.ts. */
  tls: TlsFlags;
}

export interface CompileContext {
  /** Directory relative paths are resolved from. */
  cwd: string;
  /** Environment for `--build-arg K`, `--secret env=`, `--ssh default`. */
  env: Readonly<Record<string, string | undefined>>;
  /** Whether stdout is a terminal: a tar is never written to one. */
  stdoutIsTTY?: boolean;
  /** Temp file for the `--load` tarball (made by the caller; default one under the OS temp dir). */
  loadTarPath?: string;
}

/** Parses `kiln build` arguments (after the word "build"). */
export function parseBuildArgs(argv: readonly string[]): BuildFlags {
  return parseFlags(argv, BUILD_FLAGS);
}

/**
 * Validates and defaults `kiln build` flags into BuildOptions, checking the
 * context directory and Dockerfile exist. Throws UsageError naming the flag.
 */
export function compileBuildOptions(parsed: BuildFlags, ctx: CompileContext): BuildOptions {
  const { flags, args } = parsed;
  const abs = (p: string) => resolve(ctx.cwd, p);

  if (args.length !== 1) {
    throw new UsageError(`"kiln build" requires exactly 1 argument (the build context), got ${args.length}`, 'CONTEXT');
  }
  const contextArg = args[0]!;
  // `-` (stdin) was saved to a temp dir by stdin-inputs.ts before this runs.
  if (contextArg === '-') throw new UsageError('reading the build context from stdin needs the CLI (kiln build -)', 'CONTEXT');
  // As buildx: a local directory wins; else a git or http(s) URL is a remote context the daemon fetches.
  const { contextDir, remoteContext, dockerfile, ignoreFile, contextIgnore } =
    !isDir(abs(contextArg)) && isRemoteContext(contextArg) ? remoteContextInputs(contextArg, flags.file) : localContextInputs(contextArg, flags.file, abs);

  const tags = flags.tag.map((t) => {
    if (t.trim() === '' || /\s/.test(t)) throw new UsageError(`invalid tag "${t}" for -t, --tag flag`, '--tag');
    return t;
  });

  if (flags.frontend === '') throw new UsageError('flag needs a non-empty argument: --frontend', '--frontend');
  if (flags.target === '') throw new UsageError('flag needs a non-empty argument: --target', '--target');

  const buildArgs: Record<string, string> = {};
  for (const a of flags['build-arg']) {
    const eq = a.indexOf('=');
    const key = eq < 0 ? a : a.slice(0, eq);
    if (key === '') throw new UsageError(`invalid argument "${a}" for "--build-arg" flag: expected KEY=VALUE or KEY`, '--build-arg');
    if (eq >= 0) buildArgs[key] = a.slice(eq + 1);
    else if (ctx.env[key] !== undefined) buildArgs[key] = ctx.env[key]!;
  }
  // buildx: SOURCE_DATE_EPOCH from the environment is a build arg unless one is given.
  if (buildArgs.SOURCE_DATE_EPOCH === undefined && ctx.env.SOURCE_DATE_EPOCH) buildArgs.SOURCE_DATE_EPOCH = ctx.env.SOURCE_DATE_EPOCH;
  // `context` asks for the context's commit time: a local context has none, so no epoch (the frontend sees the arg).
  const sourceDateEpoch = buildArgs.SOURCE_DATE_EPOCH === 'context' ? undefined : buildArgs.SOURCE_DATE_EPOCH || undefined;
  if (sourceDateEpoch !== undefined && !/^\d{1,12}$/.test(sourceDateEpoch)) {
    throw new UsageError(`invalid SOURCE_DATE_EPOCH: ${sourceDateEpoch} (want whole seconds since the epoch, or "context")`, '--build-arg');
  }

  const labels: Record<string, string> = {};
  for (const l of flags.label) {
    const eq = l.indexOf('=');
    if (eq <= 0) throw new UsageError(`invalid argument "${l}" for "--label" flag: expected KEY=VALUE`, '--label');
    labels[l.slice(0, eq)] = l.slice(eq + 1);
  }

  let network: BuildOptions['network'];
  if (flags.network !== undefined) {
    if (flags.network === 'none' || flags.network === 'host') network = flags.network;
    else if (flags.network !== 'default' && flags.network !== '') {
      throw new UsageError(`invalid argument "${flags.network}" for "--network" flag: network mode "${flags.network}" not supported (want default, none or host)`, '--network');
    }
  }

  const namedContexts = flags['build-context'].map((v) => parseNamedContext(v, abs));
  const seen = new Set<string>();
  for (const c of namedContexts) {
    if (seen.has(c.name)) throw new UsageError(`duplicate build context "${c.name}" for --build-context`, '--build-context');
    seen.add(c.name);
  }

  const platforms: string[] = [];
  for (const p of flags.platform.flatMap((v) => v.split(','))) {
    if (p.trim() === '') continue;
    const norm = normalizePlatformFlag(p);
    if (!platforms.includes(norm)) platforms.push(norm);
  }

  const secrets = flags.secret.map((v) => parseSecret(v, abs, ctx.env));
  const ssh = flags.ssh.map((v) => parseSsh(v, abs, ctx.env));
  const extraHosts = flags['add-host'].map(parseAddHost);
  const ulimits = flags.ulimit.map((v) => flagValue(v, '--ulimit', () => parseUlimit(v, '--ulimit')));
  const shmSize = flags['shm-size'];
  const shmSizeBytes = shmSize === undefined ? undefined : flagValue(shmSize, '--shm-size', () => parseRamBytes(shmSize, '--shm-size'));
  const entitlements: string[] = [];
  for (const e of flags.allow.flatMap((v) => v.split(','))) {
    if (!BUILD_ENTITLEMENTS.includes(e)) {
      throw new UsageError(`invalid value "${e}" for "--allow" flag: want ${BUILD_ENTITLEMENTS.join(' or ')}`, '--allow');
    }
    if (!entitlements.includes(e)) entitlements.push(e);
  }
  // buildx: --network=host asks for the network.host entitlement itself (the daemon still has to permit it).
  if (network === 'host' && !entitlements.includes('network.host')) entitlements.push('network.host');

  const workerFilters = flags['worker-filter'].map((f) => {
    if (f.trim() === '') throw new UsageError('flag needs a non-empty argument: --worker-filter', '--worker-filter');
    return f.trim();
  });

  const annotations = flags.annotation.map(parseAnnotation);
  const exports = compileExports(flags.output, {
    push: flags.push,
    load: flags.load,
    tags,
    abs,
    stdoutIsTTY: ctx.stdoutIsTTY ?? false,
    sourceDateEpoch,
    annotations,
    loadTarPath: ctx.loadTarPath ?? resolve(tmpdir(), `kiln-load-${randomBytes(8).toString('hex')}.tar`),
  });

  const cacheFrom = flags['cache-from'].map((v) => parseCacheEntry(v, '--cache-from', abs));
  const cacheTo = flags['cache-to'].map((v) => parseCacheEntry(v, '--cache-to', abs));

  const progress = (flags.quiet ? 'quiet' : (flags.progress ?? (ctx.env.BUILDKIT_PROGRESS || 'auto'))) as ProgressMode;
  if (!PROGRESS_MODES.includes(progress)) {
    throw new UsageError(`invalid argument "${flags.progress}" for "--progress" flag: want ${PROGRESS_MODES.join(', ')}`, '--progress');
  }

  if (flags['metadata-file'] === '') throw new UsageError('flag needs a non-empty argument: --metadata-file', '--metadata-file');
  const metadataFile = flags['metadata-file'] === undefined ? undefined : abs(flags['metadata-file']);
  if (flags.iidfile === '') throw new UsageError('flag needs a non-empty argument: --iidfile', '--iidfile');
  const iidFile = flags.iidfile === undefined ? undefined : abs(flags.iidfile);

  if (flags.addr !== undefined) {
    try {
      parseAddress(flags.addr, '--addr');
    } catch (err) {
      throw new UsageError(`invalid argument "${flags.addr}" for "--addr" flag: want unix:///PATH or tcp://HOST:PORT`, '--addr', { cause: err });
    }
  }

  return {
    contextDir,
    remoteContext,
    dockerfile,
    ignoreFile,
    contextIgnore,
    tags,
    target: flags.target,
    frontend: flags.frontend,
    buildArgs,
    labels,
    network,
    namedContexts,
    platforms,
    secrets,
    ssh,
    extraHosts,
    ...(ulimits.length > 0 ? { ulimits } : {}),
    ...(shmSizeBytes ? { shmSizeBytes } : {}),
    entitlements,
    workerFilters,
    exports,
    cacheFrom,
    cacheTo,
    noCache: flags['no-cache'],
    noCacheFilter: flags['no-cache-filter'].flatMap((v) => v.split(',')).map((v) => v.trim()).filter(Boolean),
    explainCache: flags['explain-cache'],
    pull: flags.pull,
    progress,
    metadataFile,
    iidFile,
    quiet: flags.quiet,
    attests: compileAttests(flags.provenance, flags.sbom, flags.attest, { defaultProvenance: pushesToRegistry(exports) && !envTrue(ctx.env.BUILDX_NO_DEFAULT_ATTESTATIONS) }),
    ...callOf(flags.print !== undefined && flags.call === undefined ? flags.print || 'outline' : flags.call, flags.check, flags.print !== undefined && flags.call === undefined ? '--print' : '--call'),
    addr: flags.addr,
    builder: flags.builder,
    tls: tlsFlagsOf(flags),
  };
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

type ContextInputs = Pick<BuildOptions, 'contextDir' | 'remoteContext' | 'dockerfile' | 'ignoreFile' | 'contextIgnore'>;

/** A local context dir: it and the Dockerfile must exist; the ignore file is `<Dockerfile>.dockerignore`, else the context's. */
function localContextInputs(contextArg: string, file: string | undefined, abs: (p: string) => string): ContextInputs {
  const contextDir = abs(contextArg);
  if (!isDir(contextDir)) throw new UsageError(`unable to prepare context: path "${contextArg}" not found or not a directory`, 'CONTEXT');
  let dockerfilePath: string;
  if (file !== undefined) {
    if (file === '-') throw new UsageError('reading the Dockerfile from stdin needs the CLI (kiln build -f -)', '--file');
    if (file === '') throw new UsageError('flag needs a non-empty argument: --file', '--file');
    dockerfilePath = abs(file);
    if (!isFile(dockerfilePath)) throw new UsageError(`--file: Dockerfile "${file}" not found`, '--file');
  } else {
    dockerfilePath = resolve(contextDir, 'Dockerfile');
    // As buildx: without -f, a lowercase `dockerfile` serves when `Dockerfile` is absent.
    if (!isFile(dockerfilePath) && isFile(resolve(contextDir, 'dockerfile'))) dockerfilePath = resolve(contextDir, 'dockerfile');
    if (!isFile(dockerfilePath)) {
      throw new UsageError(`Dockerfile not found in the build context: "${dockerfilePath}" (choose one with -f/--file)`, '--file');
    }
  }
  const dockerfileIgnore = `${dockerfilePath}.dockerignore`;
  const ignoreFile = isFile(dockerfileIgnore) ? dockerfileIgnore : isFile(resolve(contextDir, '.dockerignore')) ? resolve(contextDir, '.dockerignore') : undefined;
  return {
    contextDir,
    remoteContext: undefined,
    dockerfile: { path: dockerfilePath, dir: dirname(dockerfilePath), filename: basename(dockerfilePath) },
    ignoreFile,
    contextIgnore: ignoreFile ? readIgnore(ignoreFile) : [],
  };
}

/**
 * A remote context, as buildx: an absolute `-f` (or `-f -`, saved to a temp
 * file) is a local Dockerfile shared as the "dockerfile" dir; a relative
 * `-f` names the Dockerfile inside the remote context (default
 * "Dockerfile"). No ignore file applies.
 */
function remoteContextInputs(url: string, file: string | undefined): ContextInputs {
  if (file === '') throw new UsageError('flag needs a non-empty argument: --file', '--file');
  let dockerfile: BuildOptions['dockerfile'] = { path: '', dir: '', filename: file ?? 'Dockerfile' };
  if (file !== undefined && isAbsolute(file)) {
    if (!isFile(file)) throw new UsageError(`--file: Dockerfile "${file}" not found`, '--file');
    dockerfile = { path: file, dir: dirname(file), filename: basename(file) };
  }
  return { contextDir: '', remoteContext: url, dockerfile, ignoreFile: undefined, contextIgnore: [] };
}

/** buildx's IsRemoteURL: any http(s) URL, or a git remote (`git://`, `ssh://`, `git@HOST:PATH`). */
function isRemoteContext(v: string): boolean {
  return /^(https?|git|ssh|git\+ssh):\/\//i.test(v) || /^[A-Za-z0-9_.-]+@[A-Za-z0-9.-]+:[^/]/.test(v);
}

function isRemoteRef(v: string): boolean {
  return /^(https?:\/\/|git:\/\/|ssh:\/\/|git@|github\.com\/)/.test(v) || /\.git(#.*)?$/.test(v);
}

function readIgnore(file: string): string[] {
  const patterns = parseIgnoreFile(readFileSync(file, 'utf8'));
  try {
    new PatternMatcher(patterns, file);
  } catch (err) {
    throw new UsageError(`${(err as Error).message} in ${file}`, '.dockerignore', { cause: err });
  }
  return patterns;
}

const RESERVED_DIRS = new Set(['context', 'dockerfile']);

function parseNamedContext(v: string, abs: (p: string) => string): NamedContext {
  const eq = v.indexOf('=');
  if (eq <= 0 || eq === v.length - 1) throw new UsageError(`invalid argument "${v}" for "--build-context" flag: expected NAME=VALUE`, '--build-context');
  const name = v.slice(0, eq);
  const value = v.slice(eq + 1);
  if (value.startsWith('oci-layout://')) {
    let ref: LayoutRef;
    try {
      ref = parseLayoutRef(value.slice('oci-layout://'.length));
    } catch (err) {
      throw new UsageError(`invalid argument "${v}" for "--build-context" flag: ${(err as Error).message}`, '--build-context', { cause: err });
    }
    // A stable store name (the context's, hashed): the same context gives the same source op.
    const store = `oci-layout-${createHash('sha256').update(name).digest('hex').slice(0, 16)}`;
    return { name, kind: 'oci-layout', path: abs(ref.path), ...(ref.tag !== undefined ? { tag: ref.tag } : {}), ...(ref.digest !== undefined ? { digest: ref.digest } : {}), store };
  }
  if (value.startsWith('docker-image://') || value.startsWith('target:') || isRemoteRef(value)) {
    return { name, kind: 'ref', value };
  }
  if (RESERVED_DIRS.has(name)) {
    throw new UsageError(`invalid argument "${v}" for "--build-context" flag: "${name}" is reserved for the main context`, '--build-context');
  }
  const path = abs(value);
  if (!isDir(path)) throw new UsageError(`invalid argument "${v}" for "--build-context" flag: directory "${value}" not found`, '--build-context');
  const ignoreFile = resolve(path, '.dockerignore');
  return { name, kind: 'local', path, ignore: existsSync(ignoreFile) ? readIgnore(ignoreFile) : [] };
}

function parseSecret(v: string, abs: (p: string) => string, env: CompileContext['env']): SecretSpec {
  const flag = '--secret';
  const kv = parseCsvPairs(v, flag);
  let type: string | undefined;
  let id = '';
  let src: string | undefined;
  let envName: string | undefined;
  for (const [k, val] of kv) {
    if (k === 'type') {
      if (val !== 'file' && val !== 'env') throw new UsageError(`invalid value "${v}" for ${flag}: unsupported secret type "${val}"`, flag);
      type = val;
    } else if (k === 'id') id = val;
    else if (k === 'src' || k === 'source') src = val;
    else if (k === 'env') envName = val;
    else throw new UsageError(`invalid value "${v}" for ${flag}: unexpected key "${k}"`, flag);
  }
  if (type === 'env' && envName === undefined) [envName, src] = [src, undefined];
  if (id === '') id = envName ?? '';
  if (id === '') throw new UsageError(`invalid value "${v}" for ${flag}: id is required`, flag);
  if (src === undefined && envName === undefined) {
    // buildx: with neither, an environment variable named like the id wins, else a file named like it.
    if (env[id] !== undefined) envName = id;
    else src = id;
  }
  if (envName !== undefined) {
    if (env[envName] === undefined) throw new UsageError(`invalid value "${v}" for ${flag}: environment variable ${envName} is not set`, flag);
    return { id, kind: 'env', name: envName };
  }
  const path = abs(src!);
  if (!isFile(path)) throw new UsageError(`invalid value "${v}" for ${flag}: secret file "${src}" not found`, flag);
  return { id, kind: 'file', path };
}

function parseSsh(v: string, abs: (p: string) => string, env: CompileContext['env']): SshSpec {
  const eq = v.indexOf('=');
  const id = eq < 0 ? v : v.slice(0, eq);
  if (id === '') throw new UsageError(`invalid argument "${v}" for "--ssh" flag: expected default|ID[=SOCKET|KEY[,KEY]]`, '--ssh');
  let paths = eq < 0 ? [] : parseCsv(v.slice(eq + 1), '--ssh').filter((p) => p !== '');
  if (paths.length === 0) {
    const sock = env.SSH_AUTH_SOCK;
    if (!sock) throw new UsageError(`invalid argument "${v}" for "--ssh" flag: SSH_AUTH_SOCK is not set`, '--ssh');
    paths = [sock];
  }
  paths = paths.map(abs);
  for (const p of paths) if (!existsSync(p)) throw new UsageError(`invalid argument "${v}" for "--ssh" flag: "${p}" not found`, '--ssh');
  return { id, paths };
}

const OUTPUT_TYPES = new Set(['local', 'tar', 'oci', 'docker', 'image', 'registry', 'cacheonly']);
/** Outputs that are images: they take name=, the tags, and the source date epoch. */
const IMAGE_TYPES = new Set(['oci', 'docker', 'image']);

function compileExports(
  values: readonly string[],
  o: {
    push: boolean;
    load: boolean;
    tags: string[];
    abs: (p: string) => string;
    stdoutIsTTY: boolean;
    sourceDateEpoch: string | undefined;
    /** `--annotation`, as exporter attrs (`annotation.K`, `annotation-index.K`, ...). */
    annotations: [string, string][];
    loadTarPath: string;
  },
): ExportSpec[] {
  const flag = '--output';
  const specs: { type: string; attrs: Record<string, string>; dest?: string | undefined; dir?: boolean; load?: boolean }[] = [];
  for (const v of values) {
    // Short forms: `-o DIR` (local) and `-o -` (tar to stdout).
    if (!v.includes('=') && !v.startsWith('type=')) {
      if (v === '') throw new UsageError('flag needs a non-empty argument: --output', flag);
      specs.push(v === '-' ? { type: 'tar', attrs: {}, dest: '-' } : { type: 'local', attrs: {}, dest: v });
      continue;
    }
    const kv = parseCsvPairs(v, flag);
    let type = kv.get('type');
    if (type === undefined || type === '') throw new UsageError(`invalid value "${v}" for ${flag}: type is required`, flag);
    kv.delete('type');
    const attrs = Object.fromEntries(kv);
    if (!OUTPUT_TYPES.has(type)) {
      throw new UsageError(`invalid value "${v}" for ${flag}: unknown output type "${type}" (want local, tar, oci, docker, image, registry or cacheonly)`, flag);
    }
    if (type === 'registry') {
      type = 'image';
      attrs.push = 'true';
    }
    const dest = attrs.dest;
    delete attrs.dest;
    if (type === 'local') {
      if (dest === undefined || dest === '') throw new UsageError(`invalid value "${v}" for ${flag}: dest is required for local output`, flag);
      if (dest === '-') throw new UsageError(`invalid value "${v}" for ${flag}: a local output needs a directory (use type=tar,dest=- for stdout)`, flag);
    }
    if ((type === 'oci' || type === 'docker') && attrs.tar !== undefined && /^(false|0)$/i.test(attrs.tar)) {
      // tar=false: an OCI layout directory; the client unpacks the exporter's stream into dest.
      if (dest === undefined || dest === '' || dest === '-') throw new UsageError(`invalid value "${v}" for ${flag}: dest directory is required for ${type} output with tar=false`, flag);
      specs.push({ type, attrs, dest, dir: true });
      continue;
    }
    if (type === 'tar' || type === 'oci' || type === 'docker') {
      if (dest === '' ) throw new UsageError(`invalid value "${v}" for ${flag}: dest must not be empty`, flag);
      if (dest === undefined && o.stdoutIsTTY) {
        throw new UsageError(`invalid value "${v}" for ${flag}: dest file is required for ${type} output; refusing to write to console`, flag);
      }
      specs.push({ type, attrs, dest: dest ?? '-' });
      continue;
    }
    if ((type === 'image' || type === 'cacheonly') && dest !== undefined) {
      throw new UsageError(`invalid value "${v}" for ${flag}: ${type} output takes no dest`, flag);
    }
    specs.push({ type, attrs, dest });
  }

  if (o.push) {
    const images = specs.filter((s) => s.type === 'image');
    if (images.length === 0) specs.push({ type: 'image', attrs: { push: 'true' } });
    for (const s of images) s.attrs.push = 'true';
  }
  // --load: a docker tarball, written to a temp file the CLI then posts to dockerd's /images/load.
  if (o.load) {
    if (specs.some((s) => s.type === 'docker' && s.dest === undefined)) throw new UsageError('--load and an --output type=docker without dest both ask for the docker load', '--load');
    specs.push({ type: 'docker', attrs: {}, dest: o.loadTarPath, load: true });
  }
  // buildx with the docker driver: -t alone names an image kept by the daemon (no push).
  if (specs.length === 0 && o.tags.length > 0) specs.push({ type: 'image', attrs: {} });
  if (o.sourceDateEpoch !== undefined) {
    for (const s of specs) if (IMAGE_TYPES.has(s.type) && s.attrs['source-date-epoch'] === undefined) s.attrs['source-date-epoch'] = o.sourceDateEpoch;
  }
  for (const s of specs) {
    if (!IMAGE_TYPES.has(s.type)) continue;
    for (const [k, v] of o.annotations) s.attrs[k] ??= v;
    // Index annotations need an OCI index: ask for OCI media types unless the output says otherwise.
    if (o.annotations.length > 0 && s.attrs['oci-mediatypes'] === undefined) s.attrs['oci-mediatypes'] = 'true';
  }

  let stdoutUsers = 0;
  return specs.map((s, i): ExportSpec => {
    if ((s.type === 'image' || s.type === 'docker' || s.type === 'oci') && s.attrs.name === undefined && o.tags.length > 0) {
      s.attrs.name = o.tags.join(',');
    }
    if (s.type === 'image' && s.attrs.push === 'true' && !s.attrs.name) {
      throw new UsageError('tag is needed when pushing to registry (use -t/--tag or name= in --output)', o.push ? '--push' : flag);
    }
    if (s.dest === undefined) return { type: s.type, attrs: s.attrs };
    if (s.dest === '-') {
      if (++stdoutUsers > 1) throw new UsageError('only one output can be written to stdout', flag);
      if (o.stdoutIsTTY) throw new UsageError(`refusing to write the ${s.type} output to the terminal; redirect stdout or use dest=FILE`, flag);
    }
    const id = `out${i}`;
    return {
      type: s.type,
      attrs: { ...s.attrs, 'session.output': id },
      output: { id, kind: s.type === 'local' || s.dir ? 'dir' : 'file', path: s.dest === '-' ? '-' : o.abs(s.dest), ...(s.load ? { load: true } : {}) },
    };
  });
}

function parseCacheEntry(v: string, flag: string, abs: (p: string) => string): CacheSpec {
  if (v === '') throw new UsageError(`flag needs a non-empty argument: ${flag}`, flag);
  // buildx: a bare value is a registry ref.
  if (!v.includes('=')) return { type: 'registry', attrs: { ref: v } };
  const kv = parseCsvPairs(v, flag);
  const type = kv.get('type');
  if (type === undefined || type === '') throw new UsageError(`invalid value "${v}" for ${flag}: type is required`, flag);
  kv.delete('type');
  const attrs = Object.fromEntries(kv);
  if (type === 'local') {
    const key = flag === '--cache-from' ? 'src' : 'dest';
    if (!attrs[key]) throw new UsageError(`invalid value "${v}" for ${flag}: ${key} is required for local cache`, flag);
    // Local caches are read and written by the daemon: only meaningful when it runs on this machine.
    if (!isAbsolute(attrs[key]!)) attrs[key] = abs(attrs[key]!);
  }
  if (type === 'registry' && !attrs.ref) throw new UsageError(`invalid value "${v}" for ${flag}: ref is required for registry cache`, flag);
  return { type, attrs };
}

/** A flag value parsed by `parse`, its error as pflag reports a bad value. */
function flagValue<T>(v: string, flag: string, parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    if (!(err instanceof KilnError)) throw err;
    throw new UsageError(`invalid argument "${v}" for "${flag}" flag: ${err.message}`, flag, { cause: err });
  }
}

/** `--add-host host:ip` (or `host=ip`; an IPv6 address may be bracketed), as docker build takes it. */
function parseAddHost(v: string): { host: string; ip: string } {
  const sep = v.includes('=') ? v.indexOf('=') : v.indexOf(':');
  const host = sep > 0 ? v.slice(0, sep) : '';
  const ip = sep > 0 ? v.slice(sep + 1).replace(/^\[(.*)\]$/, '$1') : '';
  // host-gateway stays a name: the worker that runs the step puts its gateway address there.
  if (!/^[A-Za-z0-9_.-]+$/.test(host) || (isIP(ip) === 0 && ip !== 'host-gateway')) throw new UsageError(`invalid argument "${v}" for "--add-host" flag: want host:ip`, '--add-host');
  return { host, ip };
}

/**
 * `--call=NAME[,format=json|text][,ignorestatus=BOOL]` as buildx parses it
 * (names build, check, outline, targets; `--check` is `--call=check`;
 * `--print` is buildx's older name of `--call`).
 */
function callOf(value: string | undefined, check: boolean, flag = '--call'): Pick<BuildOptions, 'call' | 'callFormat' | 'callIgnoreStatus'> {
  let name = '';
  let format: string | undefined;
  let ignoreStatus = false;
  for (const field of value === undefined ? [] : parseCsv(value, flag)) {
    const eq = field.indexOf('=');
    if (eq < 0) {
      if (name !== '') throw new UsageError(`invalid argument "${value}" for "${flag}" flag: invalid print value: ${value}`, flag);
      name = field;
    } else if (field.slice(0, eq) === 'format') format = field.slice(eq + 1);
    else if (field.slice(0, eq) === 'ignorestatus') ignoreStatus = /^(1|t|true)$/i.test(field.slice(eq + 1));
    else throw new UsageError(`invalid argument "${value}" for "${flag}" flag: invalid print field: ${field}`, flag);
  }
  if (check) name = 'check';
  if (name === '' || name === 'build') return { call: undefined };
  if (name !== 'targets' && name !== 'check' && name !== 'outline') throw new UsageError(`invalid argument "${name}" for "${flag}" flag: want build, check, outline or targets`, flag);
  if (format !== undefined && format !== 'json' && format !== 'text') throw new UsageError(`invalid argument "${value}" for "${flag}" flag: format must be json or text`, flag);
  return { call: name, ...(format === 'json' ? { callFormat: 'json' as const } : {}), ...(ignoreStatus ? { callIgnoreStatus: true } : {}) };
}

/**
 * `--annotation [TYPE[,TYPE...][[PLATFORM]]:]KEY=VALUE` as buildx takes it,
 * turned into the image exporters' attrs: no type is `annotation.KEY`
 * (the manifest); types are manifest, index, manifest-descriptor and
 * index-descriptor, each `annotation-TYPE[PLATFORM].KEY`.
 */
export function parseAnnotation(v: string): [string, string] {
  const flag = '--annotation';
  const eq = v.indexOf('=');
  if (eq <= 0) throw new UsageError(`invalid argument "${v}" for "${flag}" flag: expected [TYPE:]KEY=VALUE`, flag);
  const left = v.slice(0, eq);
  const value = v.slice(eq + 1);
  const m = /^(?:([a-z-]+)(\[[^\]]+\])?:)?([^:=\s]+)$/.exec(left);
  if (!m) throw new UsageError(`invalid argument "${v}" for "${flag}" flag: expected [TYPE[[PLATFORM]]:]KEY=VALUE`, flag);
  const [, type, platform, key] = m;
  if (type === undefined) return [`annotation.${key}`, value];
  if (!['manifest', 'index', 'manifest-descriptor', 'index-descriptor'].includes(type)) {
    throw new UsageError(`invalid argument "${v}" for "${flag}" flag: unknown annotation type "${type}" (want manifest, index, manifest-descriptor or index-descriptor)`, flag);
  }
  return [`annotation-${type}${platform ?? ''}.${key}`, value];
}

/**
 * Whether an output pushes an image to a registry (`--push`, `type=image,push=true`,
 * `type=registry`): the results that get buildx's default provenance. OCI and
 * docker tarballs do not (Kiln's layout exporters attach no attestations), nor
 * does `--load` (buildx's docker driver attaches none either).
 */
export function pushesToRegistry(exports: readonly ExportSpec[]): boolean {
  return exports.some((e) => e.type === 'image' && /^(true|1)$/i.test(e.attrs.push ?? ''));
}

/** A boolean environment variable as Go's strconv.ParseBool reads it (buildx's `BUILDX_NO_DEFAULT_ATTESTATIONS`). */
function envTrue(v: string | undefined): boolean {
  return v !== undefined && /^(1|t|true)$/i.test(v.trim());
}

/**
 * `--provenance VALUE`, `--sbom VALUE` and `--attest type=T[,k=v...]` as
 * buildx turns them into BuildKit's `attest:T` frontend attrs: `true` is
 * `mode=min` for provenance, `false` disables, other values pass as they
 * are (`mode=max`); `--sbom true` is `attest:sbom` with no parameters.
 * A `generator=IMAGE` is refused: Kiln runs its own scanner, no images.
 */
export function compileAttests(provenance: string | undefined, sbom: string | undefined, attest: readonly string[], opts: { defaultProvenance?: boolean } = {}): Record<string, string> {
  const out: Record<string, string> = {};
  // buildx attaches mode=min provenance unless told otherwise; an explicit flag (even `false`) wins.
  if (opts.defaultProvenance) out.provenance = 'mode=min';
  const set = (type: string, value: string, flag: string) => {
    if (type === 'sbom') {
      // Kiln scans with its own scanner (@kiln/sbom); it runs no scanner images.
      const generator = /(?:^|,)generator=([^,]*)/.exec(value)?.[1];
      if (generator !== undefined) throw new UsageError(`invalid argument "${value}" for "${flag}" flag: generator=${generator}: Kiln runs its built-in scanner, not scanner images`, flag);
      out.sbom = /^(true|1)$/i.test(value) ? '' : /^(false|0)$/i.test(value) ? 'disabled=true' : value;
      return;
    }
    if (type !== 'provenance') throw new UsageError(`invalid argument "${value}" for "${flag}" flag: unknown attestation type "${type}" (want provenance or sbom)`, flag);
    if (/^(true|1)$/i.test(value) || value === '') value = 'mode=min';
    else if (/^(false|0)$/i.test(value)) value = 'disabled=true';
    const mode = /(?:^|,)mode=([^,]*)/.exec(value)?.[1];
    if (mode !== undefined && mode !== 'min' && mode !== 'max') throw new UsageError(`invalid argument "${value}" for "${flag}" flag: mode must be min or max`, flag);
    out[type] = value;
  };
  for (const a of attest) {
    const kv = parseCsvPairs(a, '--attest');
    const type = kv.get('type');
    if (!type) throw new UsageError(`invalid argument "${a}" for "--attest" flag: type is required`, '--attest');
    kv.delete('type');
    set(type, [...kv].map(([k, v]) => `${k}=${v}`).join(','), '--attest');
  }
  if (provenance !== undefined) set('provenance', provenance, '--provenance');
  if (sbom !== undefined && !/^(false|0)$/i.test(sbom)) set('sbom', sbom, '--sbom');
  if (out.provenance === 'disabled=true') delete out.provenance;
  if (out.sbom === 'disabled=true') delete out.sbom;
  return out;
}
