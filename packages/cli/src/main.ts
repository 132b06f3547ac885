import { asKilnError, describeError, escapeControl } from '@kiln/common';
import { runBuild } from './build/build-command.js';
import { resolveIo, type CliEnv, type CliIo } from './cli-io.js';
import { restoreDeferredEnv } from './deferred-env.js';
import { UsageError } from './flags/usage-error.js';
import { USAGE, versionLine } from './usage.js';
import { warmUpBuild, type WarmUpResult } from './snapshot-warmup.js';

// The process entry (bin/kiln.mjs) installs it before `main`: see light-headers.ts.
export { installLightHeaders } from './light-headers.js';
export { USAGE };

/** Runs one build against an in-process daemon: tools/cli-snapshot-entry.cjs, so the snapshot holds the build path compiled (snapshot-warmup.ts). */
export const warmUpForSnapshot = (): Promise<WarmUpResult> => warmUpBuild(main);


/** Exit codes: success, a failed build or daemon error, a usage error. */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

type Command = (argv: readonly string[], io: CliIo) => Promise<number>;

/**
 * Each command's module is loaded when that command runs: a `kiln build`
 * (the common, latency-bound case) evaluates none of the others' code at
 * start (bake's YAML and HCL, imagetools, history, ...). In the bundle each
 * dynamic import is a module initialised on first use.
 */
const COMMANDS: Record<string, () => Promise<Command>> = {
  bake: async () => (await import('./bake/bake-command.js')).runBake,
  build: async () => runBuild,
  builder: async () => (await import('./commands/builder-command.js')).runBuilder,
  completion: async () => {
    const [{ runCompletion }, tree] = await Promise.all([import('./commands/completion-command.js'), commandTree()]);
    return async (argv, io) => runCompletion(argv, io, () => tree);
  },
  daemon: async () => (await import('./commands/admin-commands.js')).runDaemon,
  debug: async () => (await import('./commands/debug-commands.js')).runDebug,
  du: async () => (await import('./commands/admin-commands.js')).runDiskUsage,
  history: async () => (await import('./commands/history-commands.js')).runHistory,
  imagetools: async () => (await import('./commands/imagetools/imagetools-command.js')).runImagetools,
  prune: async () => (await import('./commands/admin-commands.js')).runPrune,
  version: async () => (await import('./commands/version-command.js')).runVersion,
  workers: async () => (await import('./commands/admin-commands.js')).runWorkers,
};

/** Every command's usage, by command path: help texts are the one source of the completion scripts. */
async function commandTree() {
  const [bake, build, builder, completion, admin, debug, history, imagetools, version] = await Promise.all([
    import('./bake/bake-command.js'),
    import('./build/build-command.js'),
    import('./commands/builder-command.js'),
    import('./commands/completion-command.js'),
    import('./commands/admin-commands.js'),
    import('./commands/debug-commands.js'),
    import('./commands/history-commands.js'),
    import('./commands/imagetools/imagetools-command.js'),
    import('./commands/version-command.js'),
  ]);
  const usages: Record<string, string> = {
    bake: bake.BAKE_USAGE,
    build: build.BUILD_USAGE,
    builder: builder.BUILDER_USAGE,
    completion: completion.COMPLETION_USAGE,
    daemon: admin.DAEMON_USAGE,
    debug: debug.DEBUG_USAGE,
    du: admin.DU_USAGE,
    history: history.HISTORY_USAGE,
    imagetools: imagetools.IMAGETOOLS_USAGE,
    prune: admin.PRUNE_USAGE,
    version: version.VERSION_USAGE,
    workers: admin.WORKERS_USAGE,
  };
  const subUsages: Record<string, string> = Object.fromEntries([
    ...Object.entries(history.HISTORY_SUB_USAGES).map(([k, v]) => [`history ${k}`, v]),
    ...Object.entries(builder.BUILDER_SUB_USAGES).map(([k, v]) => [`builder ${k}`, v]),
    ...Object.entries(imagetools.IMAGETOOLS_SUB_USAGES).map(([k, v]) => [`imagetools ${k}`, v]),
  ]);
  return completion.helpTree(USAGE, usages, subUsages);
}

/**
 * The `kiln` CLI. `argv` are the arguments after the program name. Returns
 * the exit code: 0 on success, 1 when the build or the daemon failed, 2 on
 * a usage error. Errors are printed to stderr as `ERROR: <message>`.
 * Unless `env.signal` is given, SIGINT cancels the running command while
 * `main` runs (a second SIGINT exits at once).
 */
export async function main(argv: string[], env: CliEnv): Promise<number> {
  restoreDeferredEnv();
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
    const load = Object.hasOwn(COMMANDS, command) ? COMMANDS[command] : undefined;
    if (!load) throw new UsageError(`unknown command "${command}" for "kiln" (see 'kiln --help')`, 'COMMAND');
    return await (await load())(rest, io);
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
