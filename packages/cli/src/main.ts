import { asKilnError, describeError, escapeControl } from '@kiln/common';
import { runBuild } from './build/build-command.js';
import { resolveIo, type CliEnv, type CliIo } from './cli-io.js';
import { runDaemon, runDiskUsage, runPrune, runWorkers } from './commands/admin-commands.js';
import { runDebug } from './commands/debug-commands.js';
import { runHistory } from './commands/history-commands.js';
import { UsageError } from './flags/usage-error.js';

// The process entry (bin/kiln.mjs) installs it before `main`: see light-headers.ts.
export { installLightHeaders } from './light-headers.js';

export const USAGE = `Usage:  kiln COMMAND

A container image builder (BuildKit + buildx style)

Commands:
  build     Start a build
  daemon    Run the daemon in the foreground
  debug     Show how the frontend reads a Dockerfile (dockerfile-ast, shell-word)
  du        Show disk usage of the build cache
  history   Commands to work on build records
  prune     Remove build cache
  workers   List the daemon's workers

Run 'kiln COMMAND --help' for more information on a command.
`;

/** Exit codes: success, a failed build or daemon error, a usage error. */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

const COMMANDS: Record<string, (argv: readonly string[], io: CliIo) => Promise<number>> = {
  build: runBuild,
  daemon: runDaemon,
  debug: runDebug,
  du: runDiskUsage,
  history: runHistory,
  prune: runPrune,
  workers: runWorkers,
};

/**
 * The `kiln` CLI. `argv` are the arguments after the program name. Returns
 * the exit code: 0 on success, 1 when the build or the daemon failed, 2 on
 * a usage error. Errors are printed to stderr as `ERROR: <message>`.
 * Unless `env.signal` is given, SIGINT cancels the running command while
 * `main` runs (a second SIGINT exits at once).
 */
export async function main(argv: string[], env: CliEnv): Promise<number> {
  const abort = new AbortController();
  let interrupts = 0;
  const onSigint = () => {
    if (++interrupts > 1) process.exit(130);
    abort.abort(new Error('interrupted'));
  };
  if (env.signal) env.signal.addEventListener('abort', () => abort.abort(env.signal?.reason), { once: true });
  else process.on('SIGINT', onSigint);
  const io = resolveIo(env, abort.signal);
  try {
    const [command, ...rest] = argv;
    if (command === undefined) {
      io.stderr.write(USAGE);
      return EXIT_USAGE;
    }
    if (command === '--help' || command === '-h' || command === 'help') {
      io.stdout.write(USAGE);
      return EXIT_OK;
    }
    const run = COMMANDS[command];
    if (!run) throw new UsageError(`unknown command "${command}" for "kiln" (see 'kiln --help')`, 'COMMAND');
    return await run(rest, io);
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr.write(`ERROR: ${escapeControl(err.message)}\n`);
      return EXIT_USAGE;
    }
    // Messages may quote a hostile Dockerfile or daemon: no raw control bytes to the terminal.
    io.stderr.write(`ERROR: ${escapeControl(describeError(asKilnError(err)))}\n`);
    return EXIT_FAILURE;
  } finally {
    if (!env.signal) process.off('SIGINT', onSigint);
  }
}
