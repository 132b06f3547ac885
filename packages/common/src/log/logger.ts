import { pino, destination, type Logger as PinoLogger } from 'pino';

/**
 * The logger interface libraries take in their options. It is pino's, so a
 * library binds context with `logger.child({ component, buildId, vertex })`.
 */
export type Logger = PinoLogger;

/**
 * The one root logger of a process (kilnd or cli). Level comes from
 * KILN_LOG_LEVEL (default "info"; "silent" turns logging off). Logs go to
 * stderr so stdout stays free for command output.
 */
export function createRootLogger(name: string, level = process.env.KILN_LOG_LEVEL ?? 'info'): Logger {
  return pino({ name, level, base: { pid: process.pid } }, destination(2));
}

/** A logger that drops everything, for tests and library defaults. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
