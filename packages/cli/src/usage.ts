// The top-level usage text and `--version` line, in a module that imports
// only version.ts: bin/kiln.mjs answers `kiln --help` and `kiln --version`
// from it without loading the CLI bundle (node start-up only: ~0.06 s of CPU
// instead of ~0.15 s).
import { KILN_VERSION } from './version.js';

/** `kiln --version`: one line, as `docker buildx version` prints it. */
export function versionLine(): string {
  return `kiln v${KILN_VERSION} (node ${process.version})\n`;
}

export const USAGE = `Usage:  kiln COMMAND

A container image builder (BuildKit + buildx style)

Commands:
  bake        Build from a file
  build       Start a build
  builder     Manage builder instances
  completion  Print a shell completion script (bash, zsh, fish)
  daemon      Run the daemon in the foreground
  debug       Show how the frontend reads a Dockerfile (dockerfile-ast, shell-word)
  du          Show disk usage of the build cache
  history     Commands to work on build records
  imagetools  Commands to work on images in registry
  prune       Remove build cache
  version     Show the client and daemon versions
  workers     List the daemon's workers

Options:
  -h, --help      Print usage
  -v, --version   Print the client version and exit

Run 'kiln COMMAND --help' for more information on a command.
`;
