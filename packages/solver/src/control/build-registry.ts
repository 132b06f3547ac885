import { sessionCredentials, type RegistryClient } from '@kiln/registry';
import type { SessionHost } from '../session/session-host.js';

/**
 * The registry client one build uses (cache import/export, the frontend's
 * image lookups): the build's client session answers credentials first, then
 * the daemon's own store, exactly as the worker's pulls and the image
 * exporter's pushes do. A build without a session stays anonymous (plus the
 * daemon's store, when kilnd enables it).
 */
export function buildRegistryClient(registry: RegistryClient, sessions: SessionHost, sessionId: string, signal: AbortSignal): RegistryClient {
  if (!sessionId) return registry;
  return registry.withCredentials(sessionCredentials((host, sig) => sessions.credentials(sessionId, host, sig ?? signal)));
}
