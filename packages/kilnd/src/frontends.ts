import { createDockerfileFrontend, createRegistryImageResolver, type Frontend } from '@kiln/frontend-gateway';
import { createRegistryClient, dockerConfigCredentials } from '@kiln/registry';
import type { DaemonOptions } from './options.js';

/** The Dockerfile frontend with base-image lookups through the daemon's registry settings. */
export function dockerfileFrontendFor(registry: DaemonOptions['registry']): Frontend {
  return createDockerfileFrontend({ imageResolver: createRegistryImageResolver(createRegistryClient({ credentials: dockerConfigCredentials(), ...registry })) });
}
