export { main, USAGE, EXIT_OK, EXIT_FAILURE, EXIT_USAGE } from './main.js';
export type { CliEnv } from './cli-io.js';
export {
  BUILD_FLAGS,
  PROGRESS_MODES,
  compileBuildOptions,
  parseBuildArgs,
  type BuildFlags,
  type BuildOptions,
  type CacheSpec,
  type CompileContext,
  type ExportSpec,
  type NamedContext,
  type OutputTarget,
  type ProgressMode,
  type SecretSpec,
  type SshSpec,
} from './build/build-options.js';
export { toSolveRequest, sessionDirs, sessionOutputs, DOCKERFILE_FRONTEND } from './build/solve-request.js';
export { decodeExporterResponse, newBuildId, NO_OUTPUT_WARNING } from './build/build-command.js';
export { connectDaemon, resolveDaemonAddress, DEFAULT_ROOT, DEFAULT_SOCKET, type ConnectOptions, type DaemonAddress, type DaemonConnection } from './daemon.js';
export { UsageError } from './flags/usage-error.js';
export { attachSession, type Session, type SessionClient, type SessionDir, type SessionOptions, type SessionOutput } from './session/session-client.js';
export { createProgressPrinter, type ProgressPrinter, type TextSink } from './progress/progress.js';
