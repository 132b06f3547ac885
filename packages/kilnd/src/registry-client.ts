import { createRegistryClient, dockerConfigCredentials, type RegistryClient } from '@kiln/registry';
import type { DaemonOptions } from './options.js';

/**
 * The registry client a tier starts with. Builds derive theirs with
 * `withCredentials(<the client's session>)`, so a build pulls and pushes
 * with its own client's credentials. The daemon's own
 * `~/.docker/config.json` is added after the session only when the operator
 * opted in (`[registry] daemon-credentials = true`): on a shared daemon it
 * lends the daemon's identity to every client.
 */
export function daemonRegistryClient(registry: DaemonOptions['registry']): RegistryClient {
  return createRegistryClient({
    insecure: registry.insecure,
    mirrors: registry.mirrors,
    ...(registry.daemonCredentials ? { credentials: dockerConfigCredentials() } : {}),
  });
}
