/**
 * The typed instruction model. String fields hold the words as written
 * (quotes and `$VARS` unexpanded) unless noted: expansion needs the build-time
 * environment, so the converter runs them through the shell lexer
 * (`processWord`/`processWords`) itself.
 */
import type { Node } from '../parser/types.js';

export interface KeyValuePair {
  key: string;
  value: string;
  /** True for the old `ENV key value` form (no `=`). */
  noDelim: boolean;
}

export interface KeyValuePairOptional {
  key: string;
  /** Undefined for `ARG name` without a default. */
  value?: string;
  /** The comment line directly above, if any (ARG/stage descriptions). */
  comment?: string;
}

interface CommandBase {
  /** 1-based first and last line of the instruction. */
  line: number;
  endLine: number;
  /** The logical source line (see Node.original). */
  original: string;
  /** The raw flags as given. */
  flags: string[];
  node: Node;
}

/** A file created from a heredoc body: RUN/CMD/ENTRYPOINT inline files. */
export interface ShellInlineFile {
  name: string;
  /** Raw content (not chomped; apply chompHeredocContent when `chomp`). */
  data: string;
  chomp: boolean;
  /** False when the delimiter was quoted: no expansion in the content. */
  expand: boolean;
}

/** A COPY/ADD source given as a heredoc. */
export interface SourceContent {
  /** The heredoc delimiter, used as the file name. */
  path: string;
  /** Content, already chomped for `<<-`. */
  data: string;
  expand: boolean;
}

export interface SourcesAndDest {
  destPath: string;
  sourcePaths: string[];
  sourceContents: SourceContent[];
}

export interface ShellDependantCmdLine {
  /** JSON form: the elements. Shell form: one element, the command line. */
  cmdLine: string[];
  /** True for shell form (the stage's SHELL is prepended). */
  prependShell: boolean;
}

export interface EnvCommand extends CommandBase {
  kind: 'env';
  env: KeyValuePair[];
}

export interface LabelCommand extends CommandBase {
  kind: 'label';
  labels: KeyValuePair[];
}

export interface MaintainerCommand extends CommandBase {
  kind: 'maintainer';
  maintainer: string;
}

export interface AddCommand extends CommandBase, SourcesAndDest {
  kind: 'add';
  chown: string;
  chmod: string;
  link: boolean;
  keepGitDir: boolean;
  checksum: string;
  exclude: string[];
  /** --unpack: undefined when not given (default: unpack local archives). */
  unpack?: boolean;
}

export interface CopyCommand extends CommandBase, SourcesAndDest {
  kind: 'copy';
  from: string;
  chown: string;
  chmod: string;
  link: boolean;
  parents: boolean;
  exclude: string[];
}

export interface RunCommand extends CommandBase, ShellDependantCmdLine {
  kind: 'run';
  files: ShellInlineFile[];
  /** Raw `--mount` values, unparsed. */
  mounts: string[];
  network: string;
  security: string;
  devices: string[];
}

export interface CmdCommand extends CommandBase, ShellDependantCmdLine {
  kind: 'cmd';
  files: ShellInlineFile[];
}

/** An empty cmdLine (`ENTRYPOINT []`) resets the entrypoint. */
export interface EntrypointCommand extends CommandBase, ShellDependantCmdLine {
  kind: 'entrypoint';
  files: ShellInlineFile[];
}

export interface ExposeCommand extends CommandBase {
  kind: 'expose';
  ports: string[];
}

export interface UserCommand extends CommandBase {
  kind: 'user';
  user: string;
}

export interface VolumeCommand extends CommandBase {
  kind: 'volume';
  volumes: string[];
}

export interface WorkdirCommand extends CommandBase {
  kind: 'workdir';
  path: string;
}

export interface StopSignalCommand extends CommandBase {
  kind: 'stopsignal';
  signal: string;
}

export interface ArgCommand extends CommandBase {
  kind: 'arg';
  args: KeyValuePairOptional[];
}

export interface ShellCommand extends CommandBase {
  kind: 'shell';
  shell: string[];
}

/** Durations in nanoseconds; 0 means "not set / inherit". */
export interface HealthConfig {
  /** `["NONE"]`, `["CMD", ...args]` (JSON form) or `["CMD-SHELL", line]`. */
  test: string[];
  interval: number;
  timeout: number;
  startPeriod: number;
  startInterval: number;
  retries: number;
}

export interface HealthCheckCommand extends CommandBase {
  kind: 'healthcheck';
  health: HealthConfig;
}

export interface OnbuildCommand extends CommandBase {
  kind: 'onbuild';
  /** The trigger as it goes into the image config: the line without `ONBUILD`, heredocs appended. */
  expression: string;
  trigger: Node;
}

export type Command =
  | EnvCommand
  | LabelCommand
  | MaintainerCommand
  | AddCommand
  | CopyCommand
  | RunCommand
  | CmdCommand
  | EntrypointCommand
  | ExposeCommand
  | UserCommand
  | VolumeCommand
  | WorkdirCommand
  | StopSignalCommand
  | ArgCommand
  | ShellCommand
  | HealthCheckCommand
  | OnbuildCommand;

export type CommandKind = Command['kind'];

/** One build stage: a FROM and the commands after it. */
export interface Stage {
  /** Stage name from `AS name`, lower-cased; '' when unnamed. */
  name: string;
  /** The image or stage reference as written (may contain $ARGs). */
  baseName: string;
  /** Raw `--platform` value ('' when not given; may contain $ARGs). */
  platform: string;
  commands: Command[];
  /** 1-based line of the FROM. */
  line: number;
  endLine: number;
  /** The FROM line, trimmed. */
  original: string;
  /** The comment above the FROM, if any. */
  comment?: string;
  node: Node;
}

export interface ParsedDockerfile {
  stages: Stage[];
  /** ARGs before the first FROM. */
  metaArgs: ArgCommand[];
}
