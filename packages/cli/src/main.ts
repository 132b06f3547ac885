import { asKilnError, describeError, escapeControl } from '@kiln/common';
import { BAKE_USAGE, runBake } from './bake/bake-command.js';
import { runBuild } from './build/build-command.js';
import { resolveIo, type CliEnv, type CliIo } from './cli-io.js';
import { BUILD_USAGE } from './build/build-command.js';
import { DAEMON_USAGE, DU_USAGE, PRUNE_USAGE, runDaemon, runDiskUsage, runPrune, runWorkers, WORKERS_USAGE } from './commands/admin-commands.js';
import { BUILDER_SUB_USAGES, BUILDER_USAGE, runBuilder } from './commands/builder-command.js';
import { COMPLETION_USAGE, helpTree, runCompletion } from './commands/completion-command.js';
import { DEBUG_USAGE, runDebug } from './commands/debug-commands.js';
import { HISTORY_SUB_USAGES, HISTORY_USAGE, runHistory } from './commands/history-commands.js';
import { IMAGETOOLS_SUB_USAGES, IMAGETOOLS_USAGE, runImagetools } from './commands/imagetools/imagetools-command.js';
import { runVersion, VERSION_USAGE } from './commands/version-command.js';
import { UsageError } from './flags/usage-error.js';
import { USAGE, versionLine } from './usage.js';

// The process entry (bin/kiln.mjs) installs it before `main`: see light-headers.ts.
export { installLightHeaders } from './light-headers.js';
export { USAGE };


/** Exit codes: success, a failed build or daemon error, a usage error. */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

const COMMANDS: Record<string, (argv: readonly string[], io: CliIo) => Promise<number>> = {
  bake: runBake,
  build: runBuild,
  builder: runBuilder,
  completion: async (argv, io) => runCompletion(argv, io, commandTree),
  daemon: runDaemon,
  debug: runDebug,
  du: runDiskUsage,
  history: runHistory,
  imagetools: runImagetools,
  prune: runPrune,
  version: runVersion,
  workers: runWorkers,
};

/** Every command's usage, by command path: help texts are the one source of the completion scripts. */
const USAGES: Record<string, string> = {
  bake: BAKE_USAGE,
  build: BUILD_USAGE,
  builder: BUILDER_USAGE,
  completion: COMPLETION_USAGE,
  daemon: DAEMON_USAGE,
  debug: DEBUG_USAGE,
  du: DU_USAGE,
  history: HISTORY_USAGE,
  imagetools: IMAGETOOLS_USAGE,
  prune: PRUNE_USAGE,
  version: VERSION_USAGE,
  workers: WORKERS_USAGE,
};
const SUB_USAGES: Record<string, string> = Object.fromEntries([
  ...Object.entries(HISTORY_SUB_USAGES).map(([k, v]) => [`history ${k}`, v]),
  ...Object.entries(BUILDER_SUB_USAGES).map(([k, v]) => [`builder ${k}`, v]),
  ...Object.entries(IMAGETOOLS_SUB_USAGES).map(([k, v]) => [`imagetools ${k}`, v]),
]);
const commandTree = () => helpTree(USAGE, USAGES, SUB_USAGES);

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
    if (command === '--version' || command === '-v') {
      io.stdout.write(versionLine());
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
