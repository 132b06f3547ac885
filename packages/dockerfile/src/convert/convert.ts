import { InvalidArgumentError, KilnError, SourceError } from '@kiln/common';
import { formatReference, parseReference } from '@kiln/registry';
import { FileChain, git as gitSource, http as httpSource, image, local, ociLayout, State, type StateOptions } from '@kiln/llb';
import { posix } from 'node:path';
import { parseInstruction, parseInstructions } from '../instructions/index.js';
import { closest } from '../instructions/suggest.js';
import type { ArgCommand, Command, Stage } from '../instructions/types.js';
import { parseDockerfile } from '../parser/index.js';
import type { DockerfileAST } from '../parser/types.js';
import { processWord, processWordWithMatches, type ShellLexOptions } from '../shell/index.js';
import { checkConfigFromComments, Linter, looksSecret, parseCheckDirective, suggestName, type BuildWarning, type CheckConfig } from './checks.js';
import { convertAddCopy, type CopyContext } from './copy.js';
import { parseExposePort } from './expose.js';
import { goDuration, goList, goQuoteList, goQuoteRune } from './go-format.js';
import { emptyImageConfig, HISTORY_COMMENT, imageConfigFromBase, type ImageConfig } from './image-config.js';
import type { ImageMetaResolver } from './image-meta.js';
import { formatPlatform, hostPlatform, parsePlatform, platformArgs, type Platform } from './platform.js';
import { convertRun } from './run.js';
import { parseNamedContext, type NamedContextValue } from './sources.js';
import { envList, setRunEnv, type StageState } from './stage-state.js';

export interface ConvertOptions {
  filename?: string;
  /** Stage to build (name or index); default the last stage. */
  target?: string;
  buildArgs?: Record<string, string>;
  /** .dockerignore patterns applied to the context source. */
  excludePatterns?: string[];
  /** The main context when it is not the client's `context` dir (a git checkout, a downloaded archive); excludePatterns do not apply. */
  mainContext?: State;
  /** Target platform; default the build platform. */
  platform?: Platform;
  /** Platform the build runs on (BUILDPLATFORM); default the host's. */
  buildPlatform?: Platform;
  /**
   * `--build-context NAME=VALUE` overrides: a stage or image name mapped to
   * `local:DIR` (a session dir), `docker-image://REF`, `oci-layout://REF`, a git or http URL.
   */
  namedContexts?: Record<string, string>;
  /** Extra /etc/hosts entries of every RUN (`--add-host`, frontend attr `add-hosts`). */
  extraHosts?: { host: string; ip: string }[];
  /** Hostname of every RUN (frontend attr `hostname`); empty: the worker's default. */
  hostname?: string;
  /** Ulimits of every RUN (`--ulimit`, frontend attr `ulimit`). */
  ulimits?: { name: string; soft: number; hard: number }[];
  /** /dev/shm size of every RUN in bytes (`--shm-size`, frontend attr `shm-size`). */
  shmSizeBytes?: number;
  /** Image labels set over the Dockerfile's LABELs (`--label`, frontend attrs `label:K`). */
  labels?: Record<string, string>;
  /** Network of every RUN without `--network` (`--network`, frontend attr `force-network-mode`). */
  forceNetwork?: 'none' | 'host';
  /** Resolves base images (config + digest); without it images stay unpinned with an empty config. */
  imageResolver?: ImageMetaResolver;
  signal?: AbortSignal;
}

export interface ConvertResult {
  state: State;
  imageConfig: ImageConfig;
  /** Build-check warnings, in source order. */
  warnings: BuildWarning[];
  /** The target stage's platform. */
  platform: Platform;
  /**
   * SOURCE_DATE_EPOCH in seconds: the build arg, else the default of a global
   * `ARG SOURCE_DATE_EPOCH=...`; undefined without one or for `context`
   * (a local context has no commit time).
   */
  sourceDateEpoch?: number;
}

const EMPTY_IMAGE = 'scratch';

/**
 * Converts a Dockerfile to LLB for one target stage, as BuildKit's
 * dockerfile2llb: only the stages the target needs (FROM, COPY --from,
 * RUN --mount from=) are converted; base images start their stage from
 * the image's config (via `imageResolver`) and their ONBUILD triggers run;
 * the image config and history follow BuildKit's. Errors are SourceErrors
 * naming the file, line and source line.
 */
export async function convertDockerfile(text: string, opts: ConvertOptions = {}): Promise<ConvertResult> {
  const filename = opts.filename ?? 'Dockerfile';
  return withSourceLine(text, () => new Converter(parseDockerfile(text, { filename }), opts).run());
}

/** Adds the offending source line to a SourceError's message, once. */
async function withSourceLine<T>(text: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw decorateSourceError(err, text);
  }
}

/**
 * Adds the offending source line (`sourceLine`) and a 1-based `column` to a
 * SourceError that names a line of `text`; the CLI shows them under the message.
 */
export function decorateSourceError(err: unknown, text: string): unknown {
  if (!(err instanceof KilnError) || err.code !== 'source' || err.details['sourceLine'] !== undefined) return err;
  const line = Number(err.details['line']);
  if (!Number.isInteger(line) || line < 1) return err;
  const src = text.split('\n')[line - 1]?.replace(/\r$/, '');
  if (src === undefined) return err;
  err.details['sourceLine'] = src;
  err.details['column'] = columnOf(err.message, src);
  return err;
}

/** Where on the line the error points: a named flag, a quoted word, else the first non-blank. */
function columnOf(message: string, src: string): number {
  const flag = /(?:flag:? |--)([a-z][a-z0-9-]*)/i.exec(message);
  if (flag) {
    const at = src.indexOf(`--${flag[1]}`);
    if (at >= 0) return at + 1;
  }
  for (const m of message.matchAll(/["'](\S[^"']*)["']/g)) {
    const at = src.indexOf(m[1]!);
    if (at >= 0) return at + 1;
  }
  const first = src.search(/\S/);
  return first >= 0 ? first + 1 : 1;
}

class Converter {
  private readonly filename: string;
  private readonly lex: ShellLexOptions;
  private readonly linter: Linter;
  private readonly buildArgs: Record<string, string>;
  private readonly buildPlatform: Platform;
  private readonly targetPlatform: Platform;
  private readonly namedContexts = new Map<string, NamedContextValue>();
  private readonly imageMeta = new Map<string, Promise<{ ref: string; config?: unknown }>>();
  private readonly localContexts = new Map<string, State>();
  /** Global scope: platform args, then the ARGs before the first FROM. */
  private metaArgs = new Map<string, string>();
  private declaredMeta = new Set<string>();
  private stages: StageState[] = [];
  private byName = new Map<string, StageState>();
  private contextPaths = new Set<string>();
  private context!: State;
  /** One stage reading nothing but the context: its steps are named without a stage label, as BuildKit. */
  private singleStage = false;

  constructor(
    private readonly ast: DockerfileAST,
    private readonly opts: ConvertOptions,
  ) {
    this.filename = ast.filename;
    this.lex = { escapeToken: ast.directives.escape };
    const buildArgs = opts.buildArgs ?? {};
    this.buildArgs = buildArgs;
    this.linter = new Linter(this.checkConfig(buildArgs['BUILDKIT_DOCKERFILE_CHECK']), this.filename);
    this.buildPlatform = opts.buildPlatform ?? hostPlatform();
    this.targetPlatform = opts.platform ?? this.buildPlatform;
    for (const [name, value] of Object.entries(opts.namedContexts ?? {})) {
      try {
        this.namedContexts.set(name.toLowerCase(), parseNamedContext(value));
      } catch (err) {
        throw new InvalidArgumentError((err as Error).message, `context:${name}`, { cause: err });
      }
    }
  }

  /** The `# check=` directive, or the BUILDKIT_DOCKERFILE_CHECK build arg that replaces it. */
  private checkConfig(fromBuildArg: string | undefined): CheckConfig {
    try {
      return parseCheckDirective(fromBuildArg ?? this.ast.directives.check);
    } catch (err) {
      const message = `failed to parse check options: ${(err as Error).message}`;
      if (fromBuildArg !== undefined) throw new InvalidArgumentError(message, 'build-arg:BUILDKIT_DOCKERFILE_CHECK', { cause: err });
      const line = this.ast.directiveLines?.check ?? 1;
      throw new SourceError(message, this.filename, line, { cause: err });
    }
  }

  async run(): Promise<ConvertResult> {
    // The file's own `# check=` directive (above the first instruction) is the global config, not an
    // instruction's: the BUILDKIT_DOCKERFILE_CHECK build arg replaces it.
    const fileDirective = this.ast.directiveLines?.check;
    for (const node of this.ast.children) {
      const comments = fileDirective !== undefined && node === this.ast.children[0] ? [] : node.comments;
      const cfg = checkConfigFromComments(comments);
      if (cfg) this.linter.skipAt(node.startLine, cfg);
    }
    for (const w of this.ast.warnings) this.linter.report('NoEmptyContinuation', 'Empty continuation line', w.line);
    const parsed = parseInstructions(this.ast);
    if (parsed.stages.length === 0) throw new SourceError('dockerfile contains no stages to build', this.filename, 1);
    this.lintInstructionCasing();

    this.stages = parsed.stages.map((stage, index) => ({
      stage,
      index,
      state: State.scratch(),
      config: emptyImageConfig(this.targetPlatform.os, this.targetPlatform.architecture, this.targetPlatform.variant),
      env: new Map(),
      imageEnv: new Map(),
      declaredArgs: [],
      workdir: '/',
      platform: this.targetPlatform,
      cmdSet: false,
      workdirSet: false,
      status: 'pending',
    }));
    for (const s of this.stages) {
      this.lintStageLine(s.stage);
      if (!s.stage.name) continue;
      if (this.byName.has(s.stage.name)) this.linter.report('DuplicateStageName', `Duplicate stage name "${s.stage.name}", stage names should be unique`, s.stage.line);
      // As BuildKit: a later stage of the same name wins.
      this.byName.set(s.stage.name, s);
    }

    const target = this.resolveTarget();
    this.singleStage = this.stages.length === 1 && !this.readsOutsideStages(this.stages[0]!);
    const globals = platformArgs(this.buildPlatform, this.targetPlatform);
    // As BuildKit: the --target as given, else the last stage's name, else "default".
    globals.set('TARGETSTAGE', this.opts.target || this.stages[this.stages.length - 1]!.stage.name || 'default');
    for (const key of globals.keys()) if (this.buildArgs[key] !== undefined) globals.set(key, this.buildArgs[key]!);
    this.lintDefaultBaseNames(parsed.metaArgs, globals);
    this.metaArgs = new Map(globals);
    this.declareMetaArgs(parsed.metaArgs);
    const sourceDateEpoch = this.sourceDateEpoch();
    this.lintFromLines();
    this.checkCycles();

    // All context reads share one local source; its include patterns are filled in at the end.
    this.context = this.opts.mainContext ?? local('context', { excludePatterns: this.opts.excludePatterns ?? [], description: '[internal] load build context' });
    this.prefetchImages(target);
    await this.convertStage(target);

    const src = this.context.output!.vertex.op.op;
    if (!this.opts.mainContext && src.case === 'source' && this.contextPaths.size > 0 && !this.contextPaths.has('.')) {
      const paths = JSON.stringify([...this.contextPaths].sort());
      src.value.attrs['local.includepattern'] = paths;
      // As BuildKit's FollowPaths: the client also sends the targets of symlinks met on these
      // paths (`COPY link/f` through a linked directory, `COPY f` where f is a link).
      src.value.attrs['local.followpaths'] = paths;
    }
    this.linter.finish();
    const state = target.override ?? target.state;
    for (const [k, v] of Object.entries(this.opts.labels ?? {})) (target.config.config.Labels ??= {})[k] = v;
    return { state, imageConfig: target.config, warnings: this.linter.warnings, platform: target.platform, ...(sourceDateEpoch !== undefined ? { sourceDateEpoch } : {}) };
  }

  /** The build's SOURCE_DATE_EPOCH (see ConvertResult); an invalid value is an error, as in BuildKit. */
  private sourceDateEpoch(): number | undefined {
    const value = this.buildArgs['SOURCE_DATE_EPOCH'] ?? this.metaArgs.get('SOURCE_DATE_EPOCH');
    if (value === undefined || value === '' || value === 'context') return undefined;
    if (!/^\d{1,12}$/.test(value)) throw new InvalidArgumentError(`invalid SOURCE_DATE_EPOCH: ${value}`, 'build-arg:SOURCE_DATE_EPOCH');
    return Number(value);
  }

  /** A COPY --from or RUN --mount from= naming something other than a stage (an image or a named context). */
  private readsOutsideStages(s: StageState): boolean {
    const outside = (ref: string) => ref !== '' && !this.findStage(ref);
    return s.stage.commands.some(
      (cmd) =>
        (cmd.kind === 'copy' && outside(cmd.from)) ||
        (cmd.kind === 'run' && cmd.mounts.some((m) => outside(/(?:^|,)from=([^,]*)/i.exec(m)?.[1] ?? ''))),
    );
  }

  private resolveTarget(): StageState {
    const want = this.opts.target;
    if (!want) return this.stages[this.stages.length - 1]!;
    const found = this.byName.get(want.toLowerCase()) ?? (/^\d+$/.test(want) ? this.stages[Number(want)] : undefined);
    if (found) return found;
    const hint = closest(want, [...this.byName.keys()]);
    throw new InvalidArgumentError(`target stage "${want}" could not be found${hint ? ` (did you mean ${hint}?)` : ''}`, '--target');
  }

  private declareMetaArgs(cmds: ArgCommand[]): void {
    for (const cmd of cmds) {
      for (const a of cmd.args) {
        this.declaredMeta.add(a.key);
        const value = this.buildArgs[a.key] ?? (a.value !== undefined ? this.expand(a.value, this.metaArgs, cmd.line) : this.metaArgs.get(a.key));
        if (value !== undefined) this.metaArgs.set(a.key, value);
        else this.metaArgs.delete(a.key);
      }
    }
  }

  // ---- stages -----------------------------------------------------------

  private findStage(ref: string): StageState | undefined {
    return this.byName.get(ref.toLowerCase()) ?? (/^\d+$/.test(ref) ? this.stages[Number(ref)] : undefined);
  }

  /** The stage a FROM names: the nearest earlier stage of that name (BuildKit resolves FROM while adding stages). */
  private parentStage(base: string, s: StageState): StageState | undefined {
    const name = base.toLowerCase();
    for (let i = s.index - 1; i >= 0; i--) if (this.stages[i]!.stage.name === name) return this.stages[i];
    return undefined;
  }

  /**
   * InvalidDefaultArgInFrom: with the global ARG defaults alone (no build
   * args), every FROM must still name a valid image.
   */
  private lintDefaultBaseNames(metaArgs: ArgCommand[], globals: ReadonlyMap<string, string>): void {
    const env = new Map(globals);
    try {
      for (const cmd of metaArgs) {
        for (const a of cmd.args) if (a.value !== undefined) env.set(a.key, processWord(a.value, env, this.lex));
      }
      for (const s of this.stages) {
        const base = processWord(s.stage.baseName, env, this.lex);
        try {
          parseReference(base);
        } catch {
          this.linter.report('InvalidDefaultArgInFrom', `Default value for ARG ${s.stage.baseName} results in empty or invalid base image name`, s.stage.line);
        }
      }
    } catch {
      // An expansion error fails the build later, with its line.
    }
  }

  /** FROM checks of every stage, reachable or not (as BuildKit): undeclared args, constant or redundant --platform. */
  private lintFromLines(): void {
    const known = [...new Set([...this.metaArgs.keys(), ...this.declaredMeta])];
    const undeclared = (names: Iterable<string>, line: number) => {
      for (const name of names) {
        if (known.includes(name)) continue;
        const hint = suggestName(name, known);
        this.linter.report('UndefinedArgInFrom', `FROM argument '${name}' is not declared${hint ? ` (did you mean ${hint}?)` : ''}`, line);
      }
    };
    for (const s of this.stages) {
      const { stage } = s;
      try {
        undeclared(processWordWithMatches(stage.baseName, this.metaArgs, this.lex).unmatched, stage.line);
      } catch {
        // reported when the stage is converted
      }
      if (!stage.platform) continue;
      let res: ReturnType<typeof processWordWithMatches>;
      try {
        res = processWordWithMatches(stage.platform, this.metaArgs, this.lex);
      } catch {
        continue;
      }
      undeclared(res.unmatched, stage.line);
      if (res.matched.size === 1 && res.unmatched.size === 0 && res.matched.has('TARGETPLATFORM') && res.result === this.metaArgs.get('TARGETPLATFORM')) {
        this.linter.report('RedundantTargetPlatform', `Setting platform to predefined ${stage.platform} in FROM is redundant as this is the default behavior`, stage.line);
      }
      if (res.matched.size === 0 && res.unmatched.size === 0) {
        let p: Platform | undefined;
        try {
          p = parsePlatform(res.result);
        } catch {
          p = undefined; // fails when the stage is converted
        }
        // A stage named for its platform (build-arm64) pins it on purpose.
        if (p && !stage.name.includes(p.os) && !stage.name.includes(p.architecture)) {
          this.linter.report('FromPlatformFlagConstDisallowed', `FROM --platform flag should not use constant value ${JSON.stringify(res.result)}`, stage.line);
        }
      }
    }
  }

  /** The stages a stage reads (FROM, COPY --from, RUN --mount from=) as written, with the line that reads each. */
  private staticDeps(s: StageState): { dep: StageState; line: number }[] {
    const deps: { dep: StageState; line: number }[] = [];
    const ref = (name: string, line: number) => {
      if (!name || name.includes('$') || this.namedContexts.has(name.toLowerCase())) return;
      const st = this.findStage(name);
      if (st) deps.push({ dep: st, line });
    };
    if (!s.stage.baseName.includes('$') && !(s.stage.name && this.namedContexts.has(s.stage.name))) {
      const parent = this.parentStage(s.stage.baseName, s);
      if (parent && !this.namedContexts.has(s.stage.baseName.toLowerCase())) deps.push({ dep: parent, line: s.stage.line });
    }
    for (const cmd of s.stage.commands) {
      if (cmd.kind === 'copy' && cmd.from) {
        this.checkStaticCopyFrom(cmd.from, cmd.line);
        ref(cmd.from, cmd.line);
      }
      if (cmd.kind === 'run') {
        for (const m of cmd.mounts) {
          const from = /(?:^|,)from=([^,]*)/i.exec(m)?.[1];
          if (from) ref(from, cmd.line);
        }
      }
    }
    return deps;
  }

  /** As BuildKit: `COPY --from` names a stage or image as written; a variable in it is refused. */
  private checkStaticCopyFrom(from: string, line: number): void {
    if (this.expand(from, new Map(), line) !== from) {
      throw new SourceError('variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround', this.filename, line);
    }
  }

  /** BuildKit's validateCircularDependency: a stage that reads itself, directly or through others, fails the build. */
  private checkCycles(): void {
    // Depth-first with an explicit stack: a chain of thousands of stages must not overflow the call stack.
    const visited = new Set<StageState>();
    for (const root of this.stages) {
      if (visited.has(root)) continue;
      visited.add(root);
      const path: { s: StageState; deps: { dep: StageState; line: number }[]; next: number }[] = [{ s: root, deps: this.staticDeps(root), next: 0 }];
      const onPath = new Set<StageState>([root]);
      while (path.length > 0) {
        const top = path[path.length - 1]!;
        const edge = top.deps[top.next++];
        if (!edge) {
          onPath.delete(top.s);
          path.pop();
          continue;
        }
        if (onPath.has(edge.dep)) throw new SourceError(`circular dependency detected on stage: ${this.stageLabel(root)}`, this.filename, edge.line);
        if (visited.has(edge.dep)) continue;
        visited.add(edge.dep);
        onPath.add(edge.dep);
        path.push({ s: edge.dep, deps: this.staticDeps(edge.dep), next: 0 });
      }
    }
  }

  private fromEnv(): Map<string, string> {
    return this.metaArgs;
  }

  /** The expanded FROM base name of a stage, with the UndefinedArgInFrom check. */
  private baseNameOf(s: StageState): string {
    const base = this.expand(s.stage.baseName, this.fromEnv(), s.stage.line).trim();
    if (!base) {
      throw new SourceError(`base name (${s.stage.baseName}) should not be blank`, this.filename, s.stage.line);
    }
    return base;
  }

  private stagePlatform(s: StageState): Platform {
    if (!s.stage.platform) return this.targetPlatform;
    const value = this.expand(s.stage.platform, this.fromEnv(), s.stage.line);
    try {
      return parsePlatform(value);
    } catch (err) {
      throw new SourceError(`failed to parse platform ${value}: ${(err as Error).message}`, this.filename, s.stage.line, { cause: err });
    }
  }

  /** Starts image lookups for every FROM the target may need, so they run in parallel. */
  private prefetchImages(target: StageState): void {
    if (!this.opts.imageResolver) return;
    const seen = new Set<StageState>([target]);
    // An explicit stack, not recursion: a chain of thousands of stages must not overflow the call stack.
    const todo = [target];
    const push = (st: StageState) => {
      if (seen.has(st)) return;
      seen.add(st);
      todo.push(st);
    };
    for (let s = todo.pop(); s; s = todo.pop()) {
      let base: string;
      let platform: Platform;
      try {
        base = this.baseNameOf(s);
        platform = this.stagePlatform(s);
      } catch {
        continue; // reported when the stage is converted
      }
      const parent = this.parentStage(base, s);
      if (parent && !this.namedContexts.has(base.toLowerCase())) push(parent);
      else if (base.toLowerCase() !== EMPTY_IMAGE && !this.namedContexts.has(base.toLowerCase())) {
        void this.resolveImage(base, platform, s.stage.line).catch(() => undefined);
      }
      for (const cmd of s.stage.commands) {
        if (cmd.kind === 'copy' && cmd.from && !cmd.from.includes('$')) {
          const st = this.findStage(cmd.from);
          if (st && st !== s) push(st);
        }
      }
    }
  }

  /** Resolves an image ref for a platform (once per ref+platform) and pins its digest. */
  private resolveImage(ref: string, platform: Platform, line: number): Promise<{ ref: string; config?: unknown }> {
    const normalized = this.normalizeImageRef(ref, line);
    const key = `${normalized} ${formatPlatform(platform)}`;
    let p = this.imageMeta.get(key);
    if (!p) {
      const resolver = this.opts.imageResolver;
      p = resolver
        ? resolver.resolve(normalized, platform, this.opts.signal).then(
            (meta) => ({ ref: pinDigest(normalized, meta.digest), config: meta.config }),
            (err: unknown) => {
              throw new SourceError(`failed to resolve source metadata for ${normalized}: ${(err as Error).message}`, this.filename, line, { cause: err });
            },
          )
        : Promise.resolve({ ref: normalized });
      this.imageMeta.set(key, p);
    }
    return p;
  }

  /**
   * Resolves an `oci-layout://` named context for a platform (once per
   * ref+platform) through the resolver, which reads the client's layout over
   * the session, and pins the platform's manifest digest.
   */
  private resolveLayout(ref: string, name: string, platform: Platform, line: number): Promise<{ ref: string; config?: unknown }> {
    const key = `oci-layout://${ref} ${formatPlatform(platform)}`;
    let p = this.imageMeta.get(key);
    if (!p) {
      const resolve = this.opts.imageResolver?.resolveOciLayout?.bind(this.opts.imageResolver);
      p = resolve
        ? resolve(ref, platform, this.opts.signal).then(
            (meta) => ({ ref: pinDigest(ref.replace(/[:@].*$/, ''), meta.digest), config: meta.config }),
            (err: unknown) => {
              throw new SourceError(`failed to resolve build context "${name}" (oci-layout://${ref}): ${(err as Error).message}`, this.filename, line, { cause: err });
            },
          )
        : Promise.resolve({ ref });
      this.imageMeta.set(key, p);
    }
    return p;
  }

  private layoutState(pinned: string, name: string, shown: string, platform: Platform): State {
    return ociLayout(pinned, { description: `[context ${name}] oci-layout://${shown}`, platform: toPb(platform) });
  }

  private async convertStage(s: StageState): Promise<void> {
    if (s.status === 'done') return;
    if (s.status === 'converting') {
      throw new SourceError(`circular dependency detected on stage: ${s.stage.name || s.index}`, this.filename, s.stage.line);
    }
    s.status = 'converting';
    // Suspend before converting: a stage converts its parent and --from
    // stages first, and without this a chain of thousands of stages would
    // recurse on one call stack.
    await Promise.resolve();
    const override = s.stage.name ? this.namedContexts.get(s.stage.name) : undefined;
    if (override) {
      s.stepTotal = 0; // as BuildKit: a stage replaced by a named context has no numbered steps
      await this.startFromNamedContext(s, override, s.stage.name);
      s.override = s.state;
      s.status = 'done';
      return;
    }
    const base = this.baseNameOf(s);
    s.platform = this.stagePlatform(s);
    const parent = this.parentStage(base, s);
    const named = this.namedContexts.get(base.toLowerCase());
    // As BuildKit: a FROM of an image (not scratch, not a stage) is the stage's first step.
    s.fromStep = !parent && base.toLowerCase() !== EMPTY_IMAGE;
    if (named) {
      await this.startFromNamedContext(s, named, base);
    } else if (parent) {
      await this.convertStage(parent);
      s.state = parent.override ?? parent.state;
      s.config = structuredClone(parent.config);
      s.env = new Map(parent.env);
      s.imageEnv = envMapOf(s.config.config.Env ?? []);
      s.workdir = parent.workdir;
      s.workdirSet = parent.workdirSet;
      if (!s.stage.platform) s.platform = parent.platform;
    } else if (base.toLowerCase() === EMPTY_IMAGE) {
      s.state = State.scratch().withPlatform(s.platform);
      s.config = emptyImageConfig(s.platform.os, s.platform.architecture, s.platform.variant);
      s.env = envMapOf(s.config.config.Env ?? []);
      s.imageEnv = new Map(s.env);
    } else {
      await this.startFromImage(s, base, base);
    }

    const onbuild = s.config.config.OnBuild ?? [];
    if (onbuild.length > 0) {
      s.config.config.OnBuild = null;
      await this.runOnbuildTriggers(s, onbuild);
    }
    for (const cmd of s.stage.commands) await this.convertCommand(s, cmd);
    s.config.config.Env = envList(s.imageEnv);
    s.status = 'done';
  }

  private async startFromImage(s: StageState, ref: string, shown: string, platform = s.platform): Promise<void> {
    const meta = await this.resolveImage(ref, platform, s.stage.line);
    this.applyBaseConfig(s, meta.config, platform);
    s.state = image(meta.ref, { description: this.stepName(s, `FROM ${shown}`), platform: toPb(platform) }).withPlatform(toPb(platform));
    if (meta.config !== undefined && (s.config.os !== platform.os || s.config.architecture !== platform.architecture)) {
      const actual = formatPlatform({ os: s.config.os, architecture: s.config.architecture, variant: s.config.variant });
      this.linter.report('InvalidBaseImagePlatform', `Base image ${ref} was pulled with platform ${JSON.stringify(actual)}, expected ${JSON.stringify(formatPlatform(platform))} for current build`, s.stage.line);
    }
  }

  /** Starts a stage's config, env and workdir from a base image's config (or an empty one). */
  private applyBaseConfig(s: StageState, config: unknown, platform: Platform): void {
    s.config = config !== undefined ? imageConfigFromBase(config, platform) : emptyImageConfig(platform.os, platform.architecture, platform.variant);
    if (config !== undefined && !s.stage.platform) {
      s.platform = { os: s.config.os, architecture: s.config.architecture, ...(s.config.variant ? { variant: s.config.variant } : {}) };
    }
    s.env = envMapOf(s.config.config.Env ?? []);
    s.imageEnv = new Map(s.env);
    s.workdir = s.config.config.WorkingDir || '/';
  }

  private async startFromNamedContext(s: StageState, ctx: NamedContextValue, name: string): Promise<void> {
    switch (ctx.kind) {
      case 'image':
        await this.startFromImage(s, ctx.ref, `${name} (${ctx.ref})`);
        return;
      case 'oci-layout': {
        const platform = s.platform;
        const meta = await this.resolveLayout(ctx.ref, name, platform, s.stage.line);
        s.state = this.layoutState(meta.ref, name, ctx.ref, platform).withPlatform(toPb(platform));
        this.applyBaseConfig(s, meta.config, platform);
        return;
      }
      default:
        s.state = ctx.kind === 'scratch' ? State.scratch().withPlatform(s.platform) : this.namedContextState(ctx, name);
        s.config = emptyImageConfig(s.platform.os, s.platform.architecture, s.platform.variant);
        s.env = envMapOf(s.config.config.Env ?? []);
        s.imageEnv = new Map(s.env);
    }
  }

  /** A named context as a plain filesystem (COPY --from, mounts, FROM of a non-image). */
  private namedContextState(ctx: NamedContextValue, name: string): State {
    const description = `[context ${name}] load from client`;
    switch (ctx.kind) {
      case 'local': {
        let st = this.localContexts.get(ctx.dir);
        if (!st) {
          st = local(ctx.dir, { description });
          this.localContexts.set(ctx.dir, st);
        }
        return st;
      }
      case 'image':
        return image(this.normalizeImageRef(ctx.ref, 1), { description: `[context ${name}] ${ctx.ref}`, platform: toPb(this.targetPlatform) });
      case 'scratch':
        return State.scratch();
      case 'oci-layout':
        return this.layoutState(ctx.ref, name, ctx.ref, this.targetPlatform);
      case 'git':
        return gitSource(ctx.git.remote, ctx.git.ref, { fullUrl: ctx.git.fullUrl, subdir: ctx.git.subdir || undefined, description: `[context ${name}] ${ctx.git.fullUrl}` });
      case 'http':
        return httpSource(ctx.url, { description: `[context ${name}] ${ctx.url}` });
    }
  }

  /**
   * The filesystem a `--from=REF` (COPY or RUN --mount) reads: a stage
   * (converted first), a named context, or an image.
   */
  async sourceState(s: StageState, ref: string, line: number, mountTarget?: string): Promise<State> {
    const named = this.namedContexts.get(ref.toLowerCase());
    if (named?.kind === 'image') return this.imageState(named.ref, s, line);
    if (named?.kind === 'oci-layout') return this.layoutState((await this.resolveLayout(named.ref, ref, s.platform, line)).ref, ref, named.ref, s.platform);
    if (named) return this.namedContextState(named, ref);
    const st = this.findStage(ref);
    if (st) {
      if (st === s) throw new SourceError(`circular dependency detected on stage: ${s.stage.name || s.index}`, this.filename, line);
      if (st.index > s.index && !st.override) {
        if (mountTarget !== undefined) {
          throw new SourceError(`cannot mount from stage ${JSON.stringify(ref)} to ${JSON.stringify(mountTarget)}, stage needs to be defined before current command`, this.filename, line);
        }
        throw new SourceError(`cannot copy from stage ${JSON.stringify(ref)}, it needs to be defined before current stage ${JSON.stringify(this.stageLabel(s))}`, this.filename, line);
      }
      await this.convertStage(st);
      return st.override ?? st.state;
    }
    if (ref.toLowerCase() === EMPTY_IMAGE) return State.scratch();
    if (/^\d+$/.test(ref)) throw new SourceError(`invalid stage index ${ref}: the Dockerfile has ${this.stages.length} stages`, this.filename, line);
    return this.imageState(ref, s, line);
  }

  private async imageState(ref: string, s: StageState, line: number): Promise<State> {
    const meta = await this.resolveImage(ref, s.platform, line);
    return image(meta.ref, { description: `[${this.stageLabel(s)}] FROM ${ref}`, platform: toPb(s.platform) });
  }

  private async runOnbuildTriggers(s: StageState, triggers: string[]): Promise<void> {
    for (const [i, trigger] of triggers.entries()) {
      let sub: DockerfileAST;
      try {
        sub = parseDockerfile(trigger, { filename: this.filename });
      } catch (err) {
        throw new SourceError(`failed to parse ONBUILD trigger "${trigger}" of the base image: ${(err as Error).message}`, this.filename, s.stage.line, { cause: err });
      }
      for (const node of sub.children) {
        const cmd = parseInstruction(node, this.filename);
        if (!('kind' in cmd)) throw new SourceError(`FROM isn't allowed as an ONBUILD trigger`, this.filename, s.stage.line);
        // Triggers run at the FROM line of the stage that uses the image.
        const at = { ...cmd, line: s.stage.line, endLine: s.stage.line } as Command;
        await this.convertCommand(s, at, true);
      }
    }
  }

  stageLabel(s: StageState): string {
    return s.stage.name || `stage-${s.index}`;
  }

  /**
   * A step's progress name as BuildKit's prefixCommand: `[stage i/n] text`,
   * n counting the FROM of an image, the ONBUILD triggers and the ADD, COPY,
   * RUN and WORKDIR instructions; no stage label when the Dockerfile has one
   * stage; the index padded to n's width.
   */
  private stepName(s: StageState, text: string): string {
    s.stepTotal ??=
      (s.fromStep ? 1 : 0) + (s.config.config.OnBuild?.length ?? 0) + s.stage.commands.filter((c) => STEP_KINDS.has(c.kind)).length;
    if (s.stepTotal === 0) return text;
    s.stepIndex = (s.stepIndex ?? 0) + 1;
    const label = this.singleStage ? '' : `${this.stageLabel(s)} `;
    return `[${label}${String(s.stepIndex).padStart(String(s.stepTotal).length)}/${s.stepTotal}] ${text}`;
  }

  /**
   * An instruction's text as progress shows it (BuildKit): its variables
   * expanded with the stage's env (RUN keeps quotes and unset names, and
   * shows secret env variables as `****`), the keyword in upper case.
   */
  private stepText(s: StageState, cmd: Command, masked: readonly string[]): string {
    const raw = cmd.original.trim();
    let env: ReadonlyMap<string, string> = s.env;
    if (masked.length > 0) {
      const m = new Map(s.env);
      for (const k of masked) m.set(k, '****');
      env = m;
    }
    let text: string;
    try {
      text = processWord(raw, env, cmd.kind === 'run' ? { ...this.lex, rawQuotes: true, skipUnsetEnv: true } : this.lex);
    } catch {
      text = raw;
    }
    const sp = text.indexOf(' ');
    return sp < 0 ? text.toUpperCase() : text.slice(0, sp).toUpperCase() + text.slice(sp);
  }

  // ---- words ------------------------------------------------------------

  expand(word: string, env: ReadonlyMap<string, string>, line: number): string {
    return this.expandWithMatches(word, env, line).result;
  }

  expandWithMatches(word: string, env: ReadonlyMap<string, string>, line: number) {
    try {
      return processWordWithMatches(word, env, this.lex);
    } catch (err) {
      throw new SourceError((err as Error).message, this.filename, line, { cause: err });
    }
  }

  /** Expands a word into words (unquoted expansions split), reporting UndefinedVar as `word`. */
  words(s: StageState, w: string, line: number): string[] {
    try {
      const res = processWordWithMatches(w, s.env, this.lex);
      this.reportUndefined(s, res.unmatched, line);
      return res.words;
    } catch (err) {
      throw new SourceError((err as Error).message, this.filename, line, { cause: err });
    }
  }

  /** A COPY/ADD heredoc body, expanded as BuildKit's ExpandRaw: quotes are text, the escape is always `\\`. */
  heredocWord(s: StageState, w: string, line: number): string {
    try {
      const res = processWordWithMatches(w, s.env, { escapeToken: '\\', skipProcessQuotes: true });
      this.reportUndefined(s, res.unmatched, line);
      return res.result;
    } catch (err) {
      throw new SourceError((err as Error).message, this.filename, line, { cause: err });
    }
  }

  /** Expands a word of a stage instruction, reporting UndefinedVar for unset names. */
  word(s: StageState, w: string, line: number): string {
    const res = this.expandWithMatches(w, s.env, line);
    this.reportUndefined(s, res.unmatched, line);
    return res.result;
  }

  private reportUndefined(s: StageState, unmatched: Iterable<string>, line: number): void {
    for (const name of unmatched) {
      if (s.env.has(name) || s.declaredArgs.some((a) => a.key === name)) continue;
      const hint = suggestName(name, s.env.keys());
      this.linter.report('UndefinedVar', `Usage of undefined variable '$${name}'${hint ? ` (did you mean $${hint}?)` : ''}`, line);
    }
  }

  // ---- commands ---------------------------------------------------------

  private async convertCommand(s: StageState, cmd: Command, onbuild = false): Promise<void> {
    let name: string | undefined;
    // Named once, when the instruction makes a vertex (a WORKDIR of / makes none, and takes no number).
    const meta = (suffix = '', maskedEnv: readonly string[] = []): StateOptions => ({
      description: `${(name ??= this.stepName(s, `${onbuild ? 'ONBUILD ' : ''}${this.stepText(s, cmd, maskedEnv)}`))}${suffix}`,
      progressGroup: this.stageLabel(s),
      sourceIndex: 0,
      ranges: [{ startLine: cmd.line, endLine: cmd.endLine }],
    });
    const history = (createdBy: string, layer: boolean, viaState = false) =>
      s.config.history.push({ created_by: viaState ? `${createdBy} # buildkit` : createdBy, comment: HISTORY_COMMENT, ...(layer ? {} : { empty_layer: true }) });
    const word = (w: string) => this.word(s, w, cmd.line);
    try {
      switch (cmd.kind) {
        case 'arg': {
          const commit: string[] = [];
          for (const a of cmd.args) {
            this.lintArgKey('ARG', a.key, cmd.line);
            let value = this.buildArgs[a.key];
            if (value === undefined && a.value !== undefined) value = word(a.value);
            if (value === undefined) value = this.metaArgs.get(a.key);
            if (value !== undefined) setRunEnv(s, a.key, value);
            s.declaredArgs.push({ key: a.key, value });
            commit.push(value !== undefined ? `${a.key}=${value}` : a.key);
          }
          history(`ARG ${commit.join(' ')}`, false);
          return;
        }
        case 'env': {
          const commit: string[] = [];
          for (const kv of cmd.env) {
            if (kv.noDelim) this.linter.report('LegacyKeyValueFormat', `"ENV key=value" should be used instead of legacy "ENV key value" format`, cmd.line);
            const key = word(kv.key);
            const value = word(kv.value);
            this.lintArgKey('ENV', key, cmd.line);
            setRunEnv(s, key, value);
            s.imageEnv.set(key, value);
            commit.push(`${key}=${value}`);
          }
          history(`ENV ${commit.join(' ')}`, false);
          return;
        }
        case 'workdir': {
          const raw = word(cmd.path);
          // Only the first WORKDIR of the build's stages counts: fixing it fixes the ones after.
          if (!raw.startsWith('/') && !s.workdirSet) {
            this.linter.report('WorkdirRelativePath', `Relative workdir ${JSON.stringify(raw)} can have unexpected results if the base image changes`, cmd.line);
          }
          s.workdirSet = true;
          s.workdir = posix.resolve(s.workdir, raw);
          s.config.config.WorkingDir = s.workdir;
          let layer = false;
          if (s.workdir !== '/') {
            const user = s.config.config.User;
            s.state = FileChain.start()
              .mkdir(s.workdir, 0o755, { makeParents: true, owner: user ? chownOf(user) : undefined })
              .apply(s.state, meta());
            layer = true;
          }
          history(`WORKDIR ${s.workdir}`, layer);
          return;
        }
        case 'copy':
        case 'add': {
          const res = await convertAddCopy(this.copyContext(), s, cmd, meta(), word, (w) => this.heredocWord(s, w, cmd.line));
          history(res.historyLine, true, true);
          return;
        }
        case 'run': {
          const res = await convertRun(this.copyContext(), s, cmd, meta, word);
          history(`RUN ${res.historyArgs}`, true, true);
          return;
        }
        case 'label': {
          const commit: string[] = [];
          for (const kv of cmd.labels) {
            if (kv.noDelim) this.linter.report('LegacyKeyValueFormat', `"LABEL key=value" should be used instead of legacy "LABEL key value" format`, cmd.line);
            const k = word(kv.key);
            const v = word(kv.value);
            (s.config.config.Labels ??= {})[k] = v;
            commit.push(`${k}=${v}`);
          }
          history(`LABEL ${commit.join(' ')}`, false);
          return;
        }
        case 'cmd': {
          this.lintDuplicate(s, cmd);
          if (cmd.prependShell && !s.config.config.Shell?.length) this.linter.report('JSONArgsRecommended', 'JSON arguments recommended for CMD to prevent unintended behavior related to OS signals', cmd.line);
          s.config.config.Cmd = cmd.prependShell ? [...shellOf(s), ...cmd.cmdLine] : cmd.cmdLine;
          s.cmdSet = true;
          history(`CMD ${goQuoteList(s.config.config.Cmd)}`, false);
          return;
        }
        case 'entrypoint': {
          this.lintDuplicate(s, cmd);
          if (cmd.prependShell && cmd.cmdLine.length > 0 && !s.config.config.Shell?.length) this.linter.report('JSONArgsRecommended', 'JSON arguments recommended for ENTRYPOINT to prevent unintended behavior related to OS signals', cmd.line);
          const args = cmd.prependShell && cmd.cmdLine.length > 0 ? [...shellOf(s), ...cmd.cmdLine] : cmd.cmdLine;
          s.config.config.Entrypoint = args.length === 0 ? null : args;
          if (!s.cmdSet) s.config.config.Cmd = null;
          history(`ENTRYPOINT ${goQuoteList(args)}`, false);
          return;
        }
        case 'user':
          s.config.config.User = word(cmd.user);
          history(`USER ${s.config.config.User}`, false);
          return;
        case 'expose': {
          const ports: string[] = [];
          const lint = {
            protoCasing: (raw: string) => this.linter.report('ExposeProtoCasing', `Defined protocol '${raw}' in EXPOSE instruction should be lowercase`, cmd.line),
            invalidFormat: (raw: string) =>
              this.linter.report('ExposeInvalidFormat', `EXPOSE instruction should not define an IP address or host-port mapping, found '${raw}'`, cmd.line),
          };
          // Each value is split into words after expansion (EXPOSE $PORTS with PORTS="80 443").
          for (const raw of cmd.ports) {
            for (const w of this.words(s, raw, cmd.line)) for (const p of parseExposePort(w, lint)) ports.push(p);
          }
          const exposed = (s.config.config.ExposedPorts ??= {});
          for (const p of ports) exposed[p] = {};
          // BuildKit: fmt.Sprintf("EXPOSE %v", ports) of the normalised port/proto list.
          history(`EXPOSE ${goList(ports)}`, false);
          return;
        }
        case 'volume': {
          const vols = { ...s.config.config.Volumes };
          const added = cmd.volumes.map(word);
          for (const v of added) {
            if (v.trim() === '') throw new SourceError('VOLUME specified can not be an empty string', this.filename, cmd.line);
            vols[v] = {};
          }
          s.config.config.Volumes = vols;
          history(`VOLUME ${goList(added)}`, false);
          return;
        }
        case 'stopsignal': {
          const sig = word(cmd.signal);
          if (!/^(SIG)?[A-Z0-9+-]+$/i.test(sig)) throw new SourceError(`invalid signal: ${sig}`, this.filename, cmd.line);
          s.config.config.StopSignal = sig;
          history(`STOPSIGNAL ${sig}`, false);
          return;
        }
        case 'shell':
          s.config.config.Shell = cmd.shell;
          history(`SHELL ${goList(cmd.shell)}`, false);
          return;
        case 'healthcheck': {
          this.lintDuplicate(s, cmd);
          const h = cmd.health;
          const prev = s.config.config.Healthcheck;
          const hc: NonNullable<ImageConfig['config']['Healthcheck']> = { Test: h.test };
          if (h.test[0] !== 'NONE') {
            if (h.interval) hc.Interval = h.interval;
            if (h.timeout) hc.Timeout = h.timeout;
            if (h.startPeriod) hc.StartPeriod = h.startPeriod;
            if (h.startInterval) hc.StartInterval = h.startInterval;
            if (h.retries) hc.Retries = h.retries;
          }
          void prev;
          s.config.config.Healthcheck = hc;
          // BuildKit: fmt.Sprintf("HEALTHCHECK %q", &healthcheckConfig), as `docker history` shows it.
          history(
            `HEALTHCHECK &{${goQuoteList(hc.Test)} ${[hc.Interval, hc.Timeout, hc.StartPeriod, hc.StartInterval].map((d) => `"${goDuration(d ?? 0)}"`).join(' ')} ${goQuoteRune(hc.Retries ?? 0)}}`,
            false,
          );
          return;
        }
        case 'onbuild':
          // No history entry: BuildKit records ONBUILD in the config only.
          s.config.config.OnBuild = [...(s.config.config.OnBuild ?? []), cmd.expression];
          return;
        case 'maintainer':
          this.linter.report('MaintainerDeprecated', 'Maintainer instruction is deprecated in favor of using label', cmd.line);
          s.config.author = cmd.maintainer;
          history(`MAINTAINER ${cmd.maintainer}`, false);
          return;
      }
    } catch (err) {
      if (err instanceof KilnError) throw err;
      throw new SourceError((err as Error).message, this.filename, cmd.line, { cause: err });
    }
  }

  private copyContext(): CopyContext {
    return {
      filename: this.filename,
      context: this.context,
      contextPaths: this.contextPaths,
      sourceState: (s, ref, line, mountTarget) => this.sourceState(s, ref, line, mountTarget),
      stageLabel: (s) => this.stageLabel(s),
      buildArgs: this.buildArgs,
      extraHosts: this.opts.extraHosts ?? [],
      // As BuildKit's dockerui: the BUILDKIT_SANDBOX_HOSTNAME build arg wins over the hostname option.
      hostname: this.buildArgs['BUILDKIT_SANDBOX_HOSTNAME'] || this.opts.hostname || '',
      forceNetwork: this.opts.forceNetwork,
      ulimits: this.opts.ulimits,
      shmSizeBytes: this.opts.shmSizeBytes,
    };
  }

  /** Per stage, the line of the last CMD / ENTRYPOINT / HEALTHCHECK seen. */
  private readonly usedOnce = new Map<StageState, Map<string, number>>();

  /** MultipleInstructionsDisallowed, reported (as BuildKit) at the earlier instruction: the one that is ignored. */
  private lintDuplicate(s: StageState, cmd: Command): void {
    let seen = this.usedOnce.get(s);
    if (!seen) this.usedOnce.set(s, (seen = new Map()));
    const kw = cmd.kind.toUpperCase();
    const prev = seen.get(kw);
    if (prev !== undefined) this.linter.report('MultipleInstructionsDisallowed', `Multiple ${kw} instructions should not be used in the same stage because only the last one will be used`, prev);
    seen.set(kw, cmd.line);
  }

  private lintArgKey(kind: 'ARG' | 'ENV', key: string, line: number): void {
    if (looksSecret(key)) this.linter.report('SecretsUsedInArgOrEnv', `Do not use ARG or ENV instructions for sensitive data (${kind} "${key}")`, line);
  }

  private lintStageLine(stage: Stage): void {
    const fromWord = stage.node.original.trim().split(/\s+/)[0] ?? '';
    const written = stage.node.next;
    if (written.length === 3) {
      const asWord = written[1]!;
      // A mixed-case FROM is ConsistentInstructionCasing's to report.
      const want = isLower(fromWord) ? asWord.toLowerCase() : isUpper(fromWord) ? asWord.toUpperCase() : asWord;
      if (asWord !== want) this.linter.report('FromAsCasing', `'${asWord}' and '${fromWord}' keywords' casing do not match`, stage.line);
      if (written[2] !== written[2]!.toLowerCase()) this.linter.report('StageNameCasing', `Stage name '${written[2]}' should be lowercase`, stage.line);
    }
    if (stage.name === 'scratch' || stage.name === 'context') {
      this.linter.report('ReservedStageName', `Stage name should not use the same name as reserved stage ${JSON.stringify(stage.name)}`, stage.line);
    }
  }

  private lintInstructionCasing(): void {
    let upper = 0;
    let lower = 0;
    // As BuildKit: the FROMs and the stages' instructions (not the ARGs before the first FROM).
    const first = this.ast.children.findIndex((n) => n.value === 'from');
    const keywords = this.ast.children.slice(Math.max(0, first)).map((n) => ({ word: n.original.trim().split(/\s+/)[0] ?? '', line: n.startLine }));
    for (const k of keywords) {
      if (isUpper(k.word)) upper++;
      else if (isLower(k.word)) lower++;
    }
    const wantUpper = upper >= lower;
    for (const k of keywords) {
      const ok = wantUpper ? isUpper(k.word) : isLower(k.word);
      if (!ok) {
        this.linter.report(
          'ConsistentInstructionCasing',
          `Command '${k.word}' should match the case of the command majority (${wantUpper ? 'uppercase' : 'lowercase'})`,
          k.line,
        );
      }
    }
  }

  private normalizeImageRef(ref: string, line: number): string {
    try {
      return formatReference(parseReference(ref));
    } catch (err) {
      throw new SourceError((err as Error).message, this.filename, line, { cause: err });
    }
  }
}

/** The instructions that count as steps in progress names. */
const STEP_KINDS: ReadonlySet<string> = new Set(['add', 'copy', 'run', 'workdir']);

const isUpper = (w: string) => w === w.toUpperCase() && w !== w.toLowerCase();
const isLower = (w: string) => w === w.toLowerCase() && w !== w.toUpperCase();

function envMapOf(list: readonly string[]): Map<string, string> {
  const env = new Map<string, string>();
  for (const e of list) {
    const i = e.indexOf('=');
    if (i < 0) env.set(e, '');
    else env.set(e.slice(0, i), e.slice(i + 1));
  }
  return env;
}

export { envList };

/** `name:tag` + digest → `name:tag@digest` (BuildKit keeps the tag next to the pinned digest). */
function pinDigest(ref: string, digest: string): string {
  if (!digest) return ref;
  const at = ref.indexOf('@');
  return `${at >= 0 ? ref.slice(0, at) : ref}@${digest}`;
}

function toPb(p: Platform) {
  return { os: p.os, architecture: p.architecture, variant: p.variant ?? '' };
}

export function shellOf(s: StageState): string[] {
  return s.config.config.Shell ?? ['/bin/sh', '-c'];
}

/** `USER name[:group]` as a ChownOpt (ids stay numeric). */
export function chownOf(value: string) {
  const [u, g] = value.split(':');
  const id = (x: string | undefined) =>
    x === undefined || x === '' ? undefined : /^\d+$/.test(x) ? { user: { case: 'id' as const, value: Number(x) } } : { user: { case: 'name' as const, value: x } };
  const user = id(u);
  if (!user) throw new Error(`invalid user "${value}"`);
  return { user, group: id(g) };
}

