import { InvalidArgumentError, SourceError } from '@kiln/common';
import { formatReference, parseReference } from '@kiln/registry';
import { llb } from '@kiln/api';
import { execState, FileChain, image, local, State, type StateOptions } from '@kiln/llb';
import { posix } from 'node:path';
import { parseInstructions } from '../instructions/index.js';
import type { ArgCommand, Command, CopyCommand, Stage } from '../instructions/types.js';
import { parseDockerfile } from '../parser/index.js';
import { processWord, processWords, type ShellLexOptions } from '../shell/index.js';
import { emptyImageConfig, type ImageConfig } from './image-config.js';

export interface ConvertOptions {
  filename?: string;
  /** Stage to build (name or index); default the last stage. */
  target?: string;
  buildArgs?: Record<string, string>;
  /** .dockerignore patterns applied to the context source. */
  excludePatterns?: string[];
  /** Target platform ("linux/amd64"); default the host's. */
  platform?: { os: string; architecture: string; variant?: string };
}

export interface ConvertResult {
  state: State;
  imageConfig: ImageConfig;
}

interface StageState {
  stage: Stage;
  index: number;
  state: State;
  config: ImageConfig;
  env: Map<string, string>;
  args: Map<string, string>;
  workdir: string;
  converted: boolean;
}

const hostPlatform = () => ({ os: 'linux', architecture: process.arch === 'x64' ? 'amd64' : process.arch });

/**
 * Converts a Dockerfile to LLB for one target stage. Only the stages the
 * target needs (FROM and COPY --from references) are converted. Errors name
 * the file and line. This is the walking-skeleton subset of the language:
 * FROM (scratch, image, stage), COPY (context, heredoc, --from, --chmod,
 * --chown), RUN (shell and exec form, --network; no --mount or heredoc
 * yet), and the image-config instructions.
 */
export function convertDockerfile(text: string, opts: ConvertOptions = {}): ConvertResult {
  const filename = opts.filename ?? 'Dockerfile';
  const ast = parseDockerfile(text, { filename });
  const lex: ShellLexOptions = { escapeToken: ast.directives.escape };
  const parsed = parseInstructions(ast);
  if (parsed.stages.length === 0) throw new SourceError('the Dockerfile has no FROM instruction', filename, 1);
  const platform = opts.platform ?? hostPlatform();
  const buildArgs = opts.buildArgs ?? {};
  const metaArgs = declareArgs(new Map(), parsed.metaArgs, buildArgs, new Map(), lex, filename);

  const stages: StageState[] = parsed.stages.map((stage, index) => ({
    stage,
    index,
    state: State.scratch(),
    config: emptyImageConfig(platform.os, platform.architecture),
    env: new Map(),
    args: new Map(),
    workdir: '/',
    converted: false,
  }));
  const byName = new Map(stages.filter((s) => s.stage.name).map((s) => [s.stage.name, s]));
  const findStage = (ref: string): StageState | undefined => byName.get(ref.toLowerCase()) ?? (/^\d+$/.test(ref) ? stages[Number(ref)] : undefined);

  const target = opts.target ? byName.get(opts.target.toLowerCase()) : stages[stages.length - 1];
  if (!target) throw new InvalidArgumentError(`target stage "${opts.target}" could not be found`, '--target');

  // All context reads of the converted stages share one local source, so the
  // client sends exactly the union of the paths they name.
  // The source op is created now and its include patterns filled in after
  // conversion (nothing is marshalled before that).
  const contextPaths = new Set<string>();
  const context = local('context', {
    excludePatterns: opts.excludePatterns ?? [],
    description: '[internal] load build context',
  });

  const convertStage = (s: StageState, chain: Set<StageState>): void => {
    if (s.converted) return;
    if (chain.has(s)) throw new SourceError(`stage "${s.stage.name || s.index}" depends on itself`, filename, s.stage.line);
    chain.add(s);
    const fromEnv = new Map(metaArgs);
    const base = processWord(s.stage.baseName, fromEnv, lex).trim();
    if (!base) throw new SourceError('FROM requires an image or stage name', filename, s.stage.line);
    const parent = findStage(base);
    if (parent && parent.index < s.index) {
      convertStage(parent, chain);
      s.state = parent.state;
      s.config = structuredClone(parent.config);
      s.env = new Map(parent.env);
      s.workdir = parent.workdir;
    } else if (base.toLowerCase() === 'scratch') {
      s.state = State.scratch();
    } else {
      s.state = image(normalizeImageRef(base, filename, s.stage.line), { description: `[${stageLabel(s)}] FROM ${base}`, platform });
    }
    const total = s.stage.commands.length;
    s.stage.commands.forEach((cmd, i) => convertCommand(s, cmd, `[${stageLabel(s)} ${i + 1}/${total}]`, chain));
    s.converted = true;
    chain.delete(s);
  };

  const stageLabel = (s: StageState) => s.stage.name || `stage-${s.index}`;

  const convertCommand = (s: StageState, cmd: Command, prefix: string, chain: Set<StageState>): void => {
    const env = new Map([...s.args, ...s.env]);
    const word = (w: string) => processWord(w, env, lex);
    const meta = (): StateOptions => ({
      description: `${prefix} ${cmd.original}`,
      progressGroup: stageLabel(s),
      sourceIndex: 0,
      ranges: [{ startLine: cmd.line, endLine: cmd.endLine }],
    });
    const history = (createdBy: string, emptyLayer: boolean) => s.config.history.push({ created_by: createdBy, ...(emptyLayer ? { empty_layer: true } : {}) });
    try {
      switch (cmd.kind) {
        case 'arg':
          declareArgs(s.args, [cmd], buildArgs, metaArgs, lex, filename);
          return;
        case 'env':
          for (const kv of cmd.env) s.env.set(word(kv.key), word(kv.value));
          s.config.config.Env = mergeEnv(s.config.config.Env ?? [], s.env);
          history(`ENV ${cmd.env.map((kv) => `${word(kv.key)}=${word(kv.value)}`).join(' ')}`, true);
          return;
        case 'workdir': {
          s.workdir = posix.resolve(s.workdir, word(cmd.path));
          s.config.config.WorkingDir = s.workdir;
          s.state = FileChain.start().mkdir(s.workdir, 0o755, { makeParents: true }).apply(s.state, meta());
          history(`WORKDIR ${s.workdir}`, false);
          return;
        }
        case 'copy':
          convertCopy(s, cmd, meta(), chain, word);
          history(`COPY ${cmd.sourcePaths.join(' ')} ${cmd.destPath}`, false);
          return;
        case 'add':
          throw new SourceError('ADD is not supported yet; use COPY', filename, cmd.line);
        case 'run': {
          if (cmd.files.length > 0) throw new SourceError('RUN with a heredoc is not supported yet', filename, cmd.line);
          if (cmd.mounts.length > 0) throw new SourceError('RUN --mount is not supported yet', filename, cmd.line);
          if (cmd.security && cmd.security !== 'sandbox') throw new SourceError(`RUN --security=${cmd.security} is not supported yet`, filename, cmd.line);
          const args = cmd.prependShell ? [...shellOf(s), cmd.cmdLine.join(' ')] : cmd.cmdLine;
          // Build args reach RUN as environment variables; ENV of the same name wins.
          const runEnv = mergeEnv(mergeEnv([], s.args), new Map((s.config.config.Env ?? []).map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)])));
          s.state = execState(s.state, args, { env: runEnv, cwd: s.workdir, user: s.config.config.User ?? '', network: networkMode(cmd.network, filename, cmd.line) }, meta());
          history(`RUN ${cmd.prependShell ? `${shellOf(s).join(' ')} ${cmd.cmdLine.join(' ')}` : JSON.stringify(cmd.cmdLine)}`, false);
          return;
        }
        case 'label':
          s.config.config.Labels = { ...s.config.config.Labels, ...Object.fromEntries(cmd.labels.map((kv) => [word(kv.key), word(kv.value)])) };
          history(`LABEL ${cmd.labels.map((kv) => `${word(kv.key)}=${word(kv.value)}`).join(' ')}`, true);
          return;
        case 'cmd':
          s.config.config.Cmd = cmd.prependShell ? [...shellOf(s), ...cmd.cmdLine] : cmd.cmdLine;
          history(`CMD ${JSON.stringify(s.config.config.Cmd)}`, true);
          return;
        case 'entrypoint':
          s.config.config.Entrypoint = cmd.cmdLine.length === 0 ? null : cmd.prependShell ? [...shellOf(s), ...cmd.cmdLine] : cmd.cmdLine;
          history(`ENTRYPOINT ${JSON.stringify(s.config.config.Entrypoint)}`, true);
          return;
        case 'user':
          s.config.config.User = word(cmd.user);
          history(`USER ${s.config.config.User}`, true);
          return;
        case 'expose': {
          const ports = { ...s.config.config.ExposedPorts };
          for (const p of cmd.ports.flatMap((x) => processWords(x, env, lex))) ports[p.includes('/') ? p : `${p}/tcp`] = {};
          s.config.config.ExposedPorts = ports;
          history(`EXPOSE ${Object.keys(ports).join(' ')}`, true);
          return;
        }
        case 'volume': {
          const vols = { ...s.config.config.Volumes };
          for (const v of cmd.volumes) vols[word(v)] = {};
          s.config.config.Volumes = vols;
          history(`VOLUME ${JSON.stringify(Object.keys(vols))}`, true);
          return;
        }
        case 'stopsignal':
          s.config.config.StopSignal = word(cmd.signal);
          history(`STOPSIGNAL ${s.config.config.StopSignal}`, true);
          return;
        case 'shell':
          s.config.config.Shell = cmd.shell;
          history(`SHELL ${JSON.stringify(cmd.shell)}`, true);
          return;
        case 'healthcheck': {
          const h = cmd.health;
          s.config.config.Healthcheck = { Test: h.test, Interval: h.interval || undefined, Timeout: h.timeout || undefined, StartPeriod: h.startPeriod || undefined, StartInterval: h.startInterval || undefined, Retries: h.retries || undefined };
          history(`HEALTHCHECK ${JSON.stringify(h.test)}`, true);
          return;
        }
        case 'onbuild':
          s.config.config.OnBuild = [...(s.config.config.OnBuild ?? []), cmd.expression];
          history(`ONBUILD ${cmd.expression}`, true);
          return;
        case 'maintainer':
          s.config.config.Labels = { ...s.config.config.Labels, maintainer: cmd.maintainer };
          history(`MAINTAINER ${cmd.maintainer}`, true);
          return;
      }
    } catch (err) {
      if (err instanceof SourceError) throw err;
      throw new SourceError((err as Error).message, filename, cmd.line, { cause: err });
    }
  };

  const convertCopy = (s: StageState, cmd: CopyCommand, meta: StateOptions, chain: Set<StageState>, word: (w: string) => string): void => {
    const dest = resolveDest(s.workdir, word(cmd.destPath));
    const mode = cmd.chmod ? parseMode(word(cmd.chmod), filename, cmd.line) : -1;
    const owner = cmd.chown ? parseChown(word(cmd.chown), filename, cmd.line) : undefined;
    const sources = cmd.sourcePaths.map(word);
    if (sources.length + cmd.sourceContents.length > 1 && !dest.endsWith('/')) {
      throw new SourceError('when using COPY with more than one source file, the destination must be a directory and end with a /', filename, cmd.line);
    }
    let from: State | undefined;
    if (cmd.from) {
      const ref = word(cmd.from);
      const st = findStage(ref);
      if (st && st.index < s.index) {
        convertStage(st, chain);
        from = st.state;
      } else if (st) {
        throw new SourceError(`COPY --from=${ref} refers to a later stage`, filename, cmd.line);
      } else {
        from = image(normalizeImageRef(ref, filename, cmd.line));
      }
    }
    let files = FileChain.start();
    for (const src of sources) {
      const clean = posix.normalize('/' + src);
      if (!from) contextPaths.add(clean.slice(1) || '.');
      files = files.copy(from ?? context, clean, dest, {
        mode,
        owner,
        followSymlink: true,
        dirCopyContents: true,
        createDestPath: true,
        allowWildcard: true,
        allowEmptyWildcard: false,
        excludePatterns: cmd.exclude.map(word),
      });
    }
    for (const content of cmd.sourceContents) {
      const data = new TextEncoder().encode(content.expand ? word(content.data) : content.data);
      const target = dest.endsWith('/') ? posix.join(dest, content.path) : dest;
      files = files.mkdir(posix.dirname(target), 0o755, { makeParents: true }).mkfile(target, mode >= 0 ? mode : 0o644, data, { owner });
    }
    s.state = files.apply(s.state, meta);
  };

  convertStage(target, new Set());
  const src = context.output!.vertex.op.op;
  if (src.case === 'source' && contextPaths.size > 0 && !contextPaths.has('.')) src.value.attrs['local.includepattern'] = JSON.stringify([...contextPaths].sort());
  return { state: target.state, imageConfig: target.config };
}

function declareArgs(
  into: Map<string, string>,
  cmds: ArgCommand[],
  buildArgs: Record<string, string>,
  meta: Map<string, string>,
  lex: ShellLexOptions,
  filename: string,
): Map<string, string> {
  for (const cmd of cmds) {
    for (const a of cmd.args) {
      try {
        const fromBuild = buildArgs[a.key];
        const fromMeta = meta.get(a.key);
        const value = fromBuild ?? (a.value !== undefined ? processWord(a.value, new Map([...meta, ...into]), lex) : fromMeta);
        if (value !== undefined) into.set(a.key, value);
      } catch (err) {
        throw new SourceError((err as Error).message, filename, cmd.line, { cause: err });
      }
    }
  }
  return into;
}

function mergeEnv(list: string[], env: Map<string, string>): string[] {
  const out = new Map(list.map((e) => [e.slice(0, e.indexOf('=')), e]));
  for (const [k, v] of env) out.set(k, `${k}=${v}`);
  return [...out.values()];
}

function networkMode(value: string, filename: string, line: number): llb.NetMode {
  switch (value) {
    case '':
    case 'default':
      return llb.NetMode.SANDBOX;
    case 'none':
      return llb.NetMode.NONE;
    case 'host':
      return llb.NetMode.HOST;
    default:
      throw new SourceError(`invalid RUN --network=${value}: want default, none or host`, filename, line);
  }
}

function shellOf(s: StageState): string[] {
  return s.config.config.Shell ?? ['/bin/sh', '-c'];
}

function resolveDest(workdir: string, dest: string): string {
  const keepSlash = dest.endsWith('/') || dest === '.' || dest.endsWith('/.');
  const abs = posix.resolve(workdir, dest);
  return keepSlash && abs !== '/' ? `${abs}/` : abs === '/' ? '/' : abs;
}

function parseMode(value: string, filename: string, line: number): number {
  if (!/^[0-7]{3,4}$/.test(value)) throw new SourceError(`invalid --chmod "${value}": want an octal mode such as 0755`, filename, line);
  return parseInt(value, 8);
}

function parseChown(value: string, filename: string, line: number) {
  const [u, g] = value.split(':');
  const id = (x: string | undefined) => (x === undefined || x === '' ? undefined : /^\d+$/.test(x) ? { user: { case: 'id' as const, value: Number(x) } } : { user: { case: 'name' as const, value: x } });
  const user = id(u);
  if (!user) throw new SourceError(`invalid --chown "${value}"`, filename, line);
  return { user, group: id(g) ?? user };
}

function normalizeImageRef(ref: string, filename: string, line: number): string {
  try {
    return formatReference(parseReference(ref));
  } catch (err) {
    throw new SourceError((err as Error).message, filename, line, { cause: err });
  }
}
