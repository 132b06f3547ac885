import { join } from 'node:path';
import { homedir } from 'node:os';
import { createRegistryClient, dockerConfigCredentials, type RegistryClient } from '@kiln/registry';
import type { CliIo } from '../../cli-io.js';
import { UsageError } from '../../flags/usage-error.js';
import { IMAGETOOLS_CREATE_USAGE, runImagetoolsCreate } from './create.js';
import { IMAGETOOLS_INSPECT_USAGE, runImagetoolsInspect } from './inspect.js';

export const IMAGETOOLS_USAGE = `Usage:  kiln imagetools COMMAND

Commands to work on images in registry (from this machine, with its ~/.docker/config.json credentials)

Commands:
  create      Create a new image based on source images
  inspect     Show details of an image in the registry

Run 'kiln imagetools COMMAND --help' for more information on a command.
`;

export const IMAGETOOLS_SUB_USAGES: Readonly<Record<string, string>> = { create: IMAGETOOLS_CREATE_USAGE, inspect: IMAGETOOLS_INSPECT_USAGE };

/** The registry client of imagetools: the user's docker config (DOCKER_CONFIG or ~/.docker) and its credential helpers. */
function cliRegistryClient(io: CliIo): RegistryClient {
  const configDir = io.vars.DOCKER_CONFIG || join(io.vars.HOME || homedir(), '.docker');
  return createRegistryClient({ credentials: dockerConfigCredentials({ configPath: join(configDir, 'config.json') }), userAgent: 'kiln-imagetools' });
}

/** `kiln imagetools create|inspect`: registry operations done by the CLI itself, as buildx does them. */
export async function runImagetools(argv: readonly string[], io: CliIo): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h') {
    (sub === undefined ? io.stderr : io.stdout).write(IMAGETOOLS_USAGE);
    return sub === undefined ? 2 : 0;
  }
  const client = () => cliRegistryClient(io);
  if (sub === 'inspect') return runImagetoolsInspect(rest, io, client);
  if (sub === 'create') return runImagetoolsCreate(rest, io, client);
  throw new UsageError(`unknown command "${sub}" for "kiln imagetools"`, 'COMMAND');
}
