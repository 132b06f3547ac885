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
  sourceState(s: StageState, ref: string, line: number): Promise<State>;
  stageLabel(s: StageState): string;
  buildArgs: Record<string, string>;
  /** RUN's extra /etc/hosts entries and hostname (ConvertOptions). */
  extraHosts?: { host: string; ip: string }[];
  hostname?: string;
}

const SYMBOLIC_MODE = /^[ugoa]*[-+=]([rwxXst]*|[ugo])(,[ugoa]*[-+=]([rwxXst]*|[ugo]))*$/;

/** `--chmod`: octal (mode) or symbolic like `u+x,g-w` (mode_str). */
export function parseChmod(value: string, filename: string, line: number): { mode: number; modeStr: string } {
  if (/^[0-7]{1,4}$/.test(value)) return { mode: parseInt(value, 8), modeStr: '' };
  if (SYMBOLIC_MODE.test(value)) return { mode: -1, modeStr: value };
  throw new SourceError(`invalid --chmod "${value}": want an octal mode such as 0755 or a symbolic one such as u+x,g-w`, filename, line);
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
  const keepSlash = dest.endsWith('/') || dest === '.' || dest.endsWith('/.');
  const abs = posix.resolve(workdir, dest);
  return keepSlash && abs !== '/' ? `${abs}/` : abs;
}

export async function convertAddCopy(
  ctx: CopyContext,
  s: StageState,
  cmd: CopyCommand | AddCommand,
  meta: StateOptions,
  word: (w: string) => string,
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
    const remote = sources.filter((src) => isHttpUrl(src) || parseGitUrl(src));
    if (checksum && remote.length !== sources.length) fail('checksum can\'t be specified for non-HTTP(S) sources');
    if (checksum && !/^sha(256|384|512):[0-9a-f]+$/.test(checksum) && !/^[0-9a-f]{7,40}$/.test(checksum)) fail(`invalid checksum digest format "${checksum}"`);
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
    const data = new TextEncoder().encode(content.expand ? word(content.data) : content.data);
    const target = dest.endsWith('/') ? posix.join(dest, content.path) : dest;
    files = files.mkdir(posix.dirname(target), 0o755, { makeParents: true }).mkfile(target, chmod.mode >= 0 ? chmod.mode : 0o644, data, { owner });
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
  const parts = [isAdd ? 'ADD' : 'COPY', ...sources, ...cmd.sourceContents.map((c) => `<<${c.path}`), destWord];
  return { historyLine: parts.join(' ') };
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
