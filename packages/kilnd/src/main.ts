import { chmodSync, mkdirSync } from 'node:fs';
import { createRootLogger, describeError, KilnError, asKilnError } from '@kiln/common';
import { startAllInOne, type RunningDaemon } from './all-in-one.js';
import { compileDaemonOptions, DAEMON_USAGE } from './options.js';
import { startTier } from './tier.js';

/**
 * `kiln daemon ...`: runs all tiers (default) or one, until SIGTERM/SIGINT,
 * then shuts down gracefully. Returns the process exit code.
 */
export async function runDaemon(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`Usage: ${DAEMON_USAGE}\n\nRuns every tier in one process (default), or one tier (--tier) that finds the others over NATS.\n`);
    return 0;
  }
  let opts;
  try {
    opts = compileDaemonOptions(argv);
  } catch (err) {
    process.stderr.write(`ERROR: ${describeError(asKilnError(err))}\n`);
    return 2;
  }
  const logger = createRootLogger('kilnd', process.env.KILN_LOG_LEVEL ?? opts.logLevel ?? 'info');
  if (opts.registry.daemonCredentials) {
    logger.warn('[registry] daemon-credentials = true: every client pulls and pushes with this daemon\'s ~/.docker/config.json; do not use it on a shared daemon');
  }
  // State is root-only: blobs, snapshots, SQLite files and logs are unreachable for other users (issue 12, hole 6).
  mkdirSync(opts.root, { recursive: true, mode: 0o700 });
  chmodSync(opts.root, 0o700);
  // Signals are taken from the start: a SIGTERM while the daemon starts (its socket may already
  // answer) waits for the start and then shuts down gracefully, instead of killing the process
  // mid-reap with the default action (mounts and containers of a killed predecessor left behind).
  let stopped: string | undefined;
  let onStop: (() => void) | undefined;
  const exitAfter10s = (why: string) => {
    const timer = setTimeout(() => {
      logger.warn(why);
      process.exit(1);
    }, 10_000);
    timer.unref();
  };
  const stop = (sig: string) => {
    if (stopped) return;
    stopped = sig;
    logger.info({ signal: sig }, 'shutting down');
    // A start that never ends (e.g. a tier waiting for NATS) must not outlive the signal for long.
    if (onStop) onStop();
    else exitAfter10s('start and shutdown took over 10 s; exiting');
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  let daemon: RunningDaemon;
  try {
    daemon = opts.tier === 'all' ? await startAllInOne(opts, logger) : await startTier(opts, logger);
  } catch (err) {
    const e = asKilnError(err);
    logger.error({ err }, 'failed to start');
    process.stderr.write(`ERROR: failed to start kilnd: ${describeError(e)}\n`);
    return e instanceof KilnError && e.code === 'invalid_argument' ? 2 : 1;
  }
  await new Promise<void>((resolve) => {
    if (stopped) resolve();
    else
      onStop = () => {
        exitAfter10s('shutdown took over 10 s; exiting');
        resolve();
      };
  });
  await daemon.close();
  return 0;
}
