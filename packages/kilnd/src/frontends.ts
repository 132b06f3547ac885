import { createDockerfileFrontend, createRegistryImageResolver, type Frontend } from '@kiln/frontend-gateway';
import type { DaemonOptions } from './options.js';
import { daemonRegistryClient } from './registry-client.js';

/** The Dockerfile frontend with base-image lookups through the daemon's registry settings. */
export function dockerfileFrontendFor(registry: DaemonOptions['registry']): Frontend {
  return createDockerfileFrontend({ imageResolver: createRegistryImageResolver(daemonRegistryClient(registry)) });
}
