/**
 * bin/kiln sets NODE_EXTRA_CA_CERTS aside for commands that make no TLS
 * connection on node's default CA store (it costs every node start the
 * parsing of the whole file; see the launcher). Putting it back into this
 * process's environment first thing means every process the CLI starts (an
 * auto-started daemon, docker, plugins) sees the environment the user set.
 */
export const DEFERRED_EXTRA_CA_CERTS = 'KILN_DEFERRED_NODE_EXTRA_CA_CERTS';

export function restoreDeferredEnv(env: NodeJS.ProcessEnv = process.env): void {
  const file = env[DEFERRED_EXTRA_CA_CERTS];
  if (file === undefined) return;
  delete env[DEFERRED_EXTRA_CA_CERTS];
  if (env.NODE_EXTRA_CA_CERTS === undefined) env.NODE_EXTRA_CA_CERTS = file;
}
