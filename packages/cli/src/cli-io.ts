import type { Readable, Writable } from 'node:stream';
import type { Transport } from '@connectrpc/connect';
import { createRootLogger, type Logger } from '@kiln/common';

/** What `main` needs from its process; everything but daemonCommand defaults to the real process. */
export interface CliEnv {
  /** argv that starts the all-in-one daemon (`--addr` and `--root` are appended), e.g. ['node', '/opt/kiln/bin/kilnd']. */
  daemonCommand: string[];
  /** Environment variables. Default: process.env. */
  vars?: Readonly<Record<string, string | undefined>>;
  /** Working directory for relative paths. Default: process.cwd(). */
  cwd?: string;
  /** `kiln build -` and `-f -` read it. Default: process.stdin. */
  stdin?: Readable;
  /** Command output and `-o -` data. Default: process.stdout. */
  stdout?: Writable & { isTTY?: boolean };
  /** Progress, warnings and errors. Default: process.stderr. */
  stderr?: Writable & { isTTY?: boolean; columns?: number; rows?: number };
  /** Cancels the running command. Default: SIGINT (a second SIGINT exits at once). */
  signal?: AbortSignal;
  /** Logger for debugging (KILN_LOG_LEVEL, default "warn"). */
  logger?: Logger;
  /** The daemon's transport, instead of one dialled from the address (the start-up snapshot's warm-up build, snapshot-warmup.ts). */
  transport?: Transport;
}

/** CliEnv with every default applied. */
export interface CliIo {
  daemonCommand: string[];
  vars: Readonly<Record<string, string | undefined>>;
  cwd: string;
  stdin: Readable;
  stdout: Writable & { isTTY?: boolean };
  stderr: Writable & { isTTY?: boolean; columns?: number; rows?: number };
  signal: AbortSignal;
  logger: Logger;
  transport?: Transport;
}

export function resolveIo(env: CliEnv, signal: AbortSignal): CliIo {
  const vars = env.vars ?? process.env;
  return {
    daemonCommand: env.daemonCommand,
    vars,
    cwd: env.cwd ?? process.cwd(),
    // A getter: touching process.stdin opens it, which no command but `build -` needs.
    get stdin() {
      return env.stdin ?? process.stdin;
    },
    stdout: env.stdout ?? process.stdout,
    stderr: env.stderr ?? process.stderr,
    signal,
    logger: env.logger ?? createRootLogger('kiln', vars.KILN_LOG_LEVEL ?? 'warn'),
    ...(env.transport ? { transport: env.transport } : {}),
  };
}
