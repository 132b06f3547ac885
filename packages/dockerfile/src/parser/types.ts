/** A here-document attached to a RUN/COPY/ADD instruction (`<<EOF` ... `EOF`). */
export interface Heredoc {
  /** The delimiter word with quotes removed, e.g. `EOF` for `<<"EOF"`. */
  name: string;
  /** Raw content: the lines between the instruction and the delimiter, each with its newline. Not chomped. */
  content: string;
  /** False when any part of the delimiter was quoted (`<<"EOF"`, `<<'EOF'`): no expansion in the content. */
  expand: boolean;
  /** True for `<<-EOF`: leading tabs are stripped from content lines (see chompHeredocContent). */
  chomp: boolean;
  /** File descriptor prefix, e.g. 3 for `3<<EOF`; 0 when absent. */
  fileDescriptor: number;
}

/** One Dockerfile instruction. */
export interface Node {
  /** Instruction keyword, lower case (`from`, `run`, ...). */
  value: string;
  /** The instruction's logical line: continuation lines joined, comments dropped, escapes kept. */
  original: string;
  /** Leading `--flags`, verbatim apart from quote removal; a `--` terminator is dropped. */
  flags: string[];
  /** Arguments as the Docker parser splits them (JSON elements, the shell-form line, key/value/sep triples, ...). */
  next: string[];
  /** For ONBUILD: the nested trigger instruction. */
  child?: Node;
  /** True when the arguments were given in JSON (exec) form. */
  json: boolean;
  /** Here-documents, in the order they appear on the line. */
  heredocs: Heredoc[];
  /** Comment lines directly above the instruction (without `#`). */
  comments: string[];
  /** 1-based first line of the instruction. */
  startLine: number;
  /** 1-based last line (including continuation lines and heredoc bodies). */
  endLine: number;
}

/** Parser directives from the top of the file. */
export interface Directives {
  /** The escape token: `\` (default) or `` ` ``. */
  escape: string;
  syntax?: string;
  check?: string;
}

export interface ParseWarning {
  message: string;
  /** 1-based line the warning points at. */
  line: number;
}

export interface DockerfileAST {
  /** Name used in errors (default `Dockerfile`). */
  filename: string;
  directives: Directives;
  /** 1-based line of each directive given (for errors about its value). */
  directiveLines?: Partial<Record<'syntax' | 'escape' | 'check', number>>;
  children: Node[];
  warnings: ParseWarning[];
}

export interface ParseOptions {
  /** File name reported in errors, default `Dockerfile`. */
  filename?: string;
}
