/** COPY and ADD to file ops, as BuildKit's dispatchCopy. */
import { SourceError } from '@kiln/common';
import { FileChain, git as gitSource, http as httpSource, merge, State, type StateOptions } from '@kiln/llb';
import { posix } from 'node:path';
import type { AddCommand, CopyCommand } from '../instructions/types.js';
import { isHttpUrl, parseGitUrl } from './sources.js';
import type { StageState } from './stage-state.js';

/** What COPY/ADD/RUN need from the converter. */
export interface CopyContext {
  filename: string;
  /** The build context source (`local://context`). */
  context: State;
  /** Context paths read so far (the context source's include patterns). */
  contextPaths: Set<string>;
  /** The filesystem of `--from=REF`: a stage, named context or image. */
  sourceState(s: StageState, ref: string, line: number, mountTarget?: string): Promise<State>;
  stageLabel(s: StageState): string;
  buildArgs: Record<string, string>;
  /** RUN's extra /etc/hosts entries and hostname (ConvertOptions). */
  extraHosts?: { host: string; ip: string }[];
  hostname?: string;
  /** RUN's ulimits and /dev/shm size in bytes (ConvertOptions). */
  ulimits?: { name: string; soft: number; hard: number }[];
  shmSizeBytes?: number;
  /** RUN's network when it has no `--network` (ConvertOptions). */
  forceNetwork?: 'none' | 'host';
}

const SYMBOLIC_MODE = /^[ugoa]*[-+=]([rwxXst]*|[ugo])(,[ugoa]*[-+=]([rwxXst]*|[ugo]))*$/;

/**
 * `--chmod`: octal (mode) or symbolic like `u+x,g-w` (mode_str). As BuildKit,
 * a value that starts with a digit must be an octal number up to 07777.
 */
export function parseChmod(value: string, filename: string, line: number): { mode: number; modeStr: string } {
  if (/^[0-9]/.test(value)) {
    const mode = /^[0-7]+$/.test(value) ? parseInt(value, 8) : NaN;
    if (!(mode <= 0o7777)) throw new SourceError(`invalid chmod parameter: '${value}'. it should be octal string and between 0 and 07777`, filename, line);
    return { mode, modeStr: '' };
  }
  if (SYMBOLIC_MODE.test(value)) return { mode: -1, modeStr: value };
  throw new SourceError(`invalid chmod parameter: '${value}': want an octal mode such as 0755 or a symbolic one such as u+x,g-w`, filename, line);
}

/** `--chown=user[:group]` with names or ids; the group defaults to the user. */
export function parseChown(value: string, filename: string, line: number) {
  const [u, g, extra] = value.split(':');
  if (extra !== undefined) throw new SourceError(`invalid --chown "${value}": want user[:group]`, filename, line);
  const id = (x: string | undefined) =>
    x === undefined || x === '' ? undefined : /^\d+$/.test(x) ? { user: { case: 'id' as const, value: Number(x) } } : { user: { case: 'name' as const, value: x } };
  const user = id(u);
  if (!user) throw new SourceError(`invalid --chown "${value}": want user[:group]`, filename, line);
  return { user, group: id(g) ?? user };
}

/** A destination against the workdir; a trailing slash (directory) is kept. */
export function resolveDest(workdir: string, dest: string): string {
  // As BuildKit: an empty destination (e.g. an empty variable) is the workdir as a directory.
  const keepSlash = dest === '' || dest.endsWith('/') || dest === '.' || dest.endsWith('/.');
  const abs = posix.resolve(workdir, dest);
  return keepSlash && abs !== '/' ? `${abs}/` : abs;
}

export async function convertAddCopy(
  ctx: CopyContext,
  s: StageState,
  cmd: CopyCommand | AddCommand,
  meta: StateOptions,
  word: (w: string) => string,
  expandHeredoc: (w: string) => string,
): Promise<{ historyLine: string }> {
  const isAdd = cmd.kind === 'add';
  const fail = (msg: string): never => {
    throw new SourceError(msg, ctx.filename, cmd.line);
  };
  const destWord = word(cmd.destPath);
  const dest = resolveDest(s.workdir, destWord);
  const chmod = cmd.chmod ? parseChmod(word(cmd.chmod), ctx.filename, cmd.line) : { mode: -1, modeStr: '' };
  const owner = cmd.chown ? parseChown(word(cmd.chown), ctx.filename, cmd.line) : undefined;
  const sources = cmd.sourcePaths.map(word);
  const excludes = cmd.exclude.map(word);
  if (sources.length + cmd.sourceContents.length > 1 && !dest.endsWith('/')) {
    fail(`when using ${isAdd ? 'ADD' : 'COPY'} with more than one source file, the destination must be a directory and end with a /`);
  }
  let from: State | undefined;
  if (cmd.kind === 'copy' && cmd.from) from = await ctx.sourceState(s, word(cmd.from), cmd.line);

  const checksum = isAdd && cmd.checksum ? word(cmd.checksum) : '';
  if (isAdd) {
    if (checksum) checkChecksum(checksum, sources, cmd.sourceContents.length, fail);
    if (cmd.keepGitDir && sources.some((src) => !parseGitUrl(src))) fail('--keep-git-dir is only valid for git sources');
  }
  const parents = cmd.kind === 'copy' && cmd.parents;

  let files = FileChain.start();
  for (const src of sources) {
    const git = isAdd ? parseGitUrl(src) : undefined;
    if (isAdd && git) {
      const st = gitSource(git.remote, git.ref, {
        keepGitDir: cmd.keepGitDir,
        fullUrl: git.fullUrl,
        subdir: git.subdir || undefined,
        checksum: checksum || undefined,
        description: `[${ctx.stageLabel(s)}] load git source ${src}`,
      });
      files = files.copy(st, '/', dest, {
        mode: chmod.mode,
        modeStr: chmod.modeStr,
        owner,
        followSymlink: true,
        dirCopyContents: true,
        createDestPath: true,
        allowWildcard: true,
        allowEmptyWildcard: true,
        excludePatterns: excludes,
      });
      continue;
    }
    if (isAdd && isHttpUrl(src)) {
      const filename = httpFilename(src);
      const st = httpSource(src, { filename, checksum: checksum || undefined, description: `[${ctx.stageLabel(s)}] download ${src}` });
      files = files.copy(st, `/${filename}`, dest, {
        mode: chmod.mode,
        modeStr: chmod.modeStr,
        owner,
        createDestPath: true,
        attemptUnpackDockerCompatibility: cmd.unpack === true,
      });
      continue;
    }
    // --parents: the worker keeps each match's path below the pivot (`/./`, else the root).
    let clean = posix.normalize('/' + src);
    if (parents) {
      const pivot = src.indexOf('/./');
      const pivotPath = posix.normalize('/' + (pivot >= 0 ? src.slice(0, pivot) : ''));
      const rest = posix.normalize('/' + (pivot >= 0 ? src.slice(pivot + 3) : src)).slice(1);
      clean = pivot >= 0 ? `${pivotPath.replace(/\/$/, '')}/./${rest}` : `/${rest}`;
      if (!from) ctx.contextPaths.add(posix.join(pivotPath, rest).slice(1) || '.');
    } else if (!from) {
      ctx.contextPaths.add(clean.slice(1) || '.');
    }
    files = files.copy(from ?? ctx.context, clean, dest, {
      mode: chmod.mode,
      modeStr: chmod.modeStr,
      owner,
      followSymlink: true,
      dirCopyContents: true,
      attemptUnpackDockerCompatibility: isAdd && (cmd as AddCommand).unpack !== false,
      createDestPath: true,
      allowWildcard: true,
      allowEmptyWildcard: true,
      parents,
      excludePatterns: excludes,
    });
  }
  for (const content of cmd.sourceContents) {
    // As BuildKit: the heredoc becomes a 0644 file on scratch, copied like any source (so --chmod,
    // symbolic or octal, and --chown apply). Its expansion keeps quotes: only $VARS and escapes act.
    const data = new TextEncoder().encode(content.expand ? expandHeredoc(content.data) : content.data);
    const doc = FileChain.start()
      .mkfile(`/${content.path}`, 0o644, data)
      .apply(s.state.platform ? State.scratch().withPlatform(s.state.platform) : State.scratch(), { description: '[internal] preparing inline document' });
    files = files.copy(doc, `/${content.path}`, dest, { mode: chmod.mode, modeStr: chmod.modeStr, owner, createDestPath: true });
  }
  if (cmd.link && !s.state.isScratch()) {
    // --link (as BuildKit): the copy lands on scratch, so its cache key never depends on the
    // layers below, and a MergeOp layers it onto the stage.
    const onto = s.state.platform ? State.scratch().withPlatform(s.state.platform) : State.scratch();
    const copied = files.apply(onto, meta);
    s.state = merge([s.state, copied], { ...meta, description: meta.description ? `${meta.description} (link)` : undefined });
  } else {
    s.state = files.apply(s.state, meta);
  }
  // BuildKit's history line: the flags that change the files, then sources and destination.
  const flags = [
    ...(cmd.kind === 'copy' && cmd.parents ? ['--parents'] : []),
    ...(cmd.chown ? [`--chown=${word(cmd.chown)}`] : []),
    ...(cmd.chmod ? [`--chmod=${word(cmd.chmod)}`] : []),
  ];
  const parts = [isAdd ? 'ADD' : 'COPY', ...flags, ...sources, ...cmd.sourceContents.map((c) => `<<${c.path}`), destWord];
  return { historyLine: parts.join(' ') };
}

const DIGEST_HEX: Record<string, number> = { sha256: 64, sha384: 96, sha512: 128 };

/**
 * `ADD --checksum`: one source only, a download (`algo:hex` digest, as
 * go-digest parses it) or a git repository (a commit id).
 */
function checkChecksum(checksum: string, sources: string[], heredocs: number, fail: (msg: string) => never): void {
  if (sources.length + heredocs !== 1) fail('checksum can\'t be specified for multiple sources');
  const src = sources[0];
  if (src === undefined || (!isHttpUrl(src) && !parseGitUrl(src))) fail('checksum can\'t be specified for non-HTTP(S) sources');
  if (parseGitUrl(src!)) {
    if (!/^[0-9a-f]{7,64}$/.test(checksum)) fail(`invalid checksum "${checksum}" for a git source: expected hex commit hash`);
    return;
  }
  const [algo, hex] = checksum.split(':');
  const want = DIGEST_HEX[algo ?? ''];
  if (!want || hex === undefined || !/^[0-9a-f]+$/.test(hex)) fail(`invalid checksum digest format "${checksum}": want sha256:<64 hex digits>`);
  if (hex!.length !== want) fail(`invalid checksum digest length "${checksum}": ${algo} takes ${want} hex digits`);
}

/** The file name of a download: the URL path's last element, as BuildKit. */
function httpFilename(src: string): string {
  try {
    const base = posix.basename(new URL(src).pathname);
    return base && base !== '/' && base !== '.' ? decodeURIComponent(base) : '__unnamed__';
  } catch {
    return '__unnamed__';
  }
}
