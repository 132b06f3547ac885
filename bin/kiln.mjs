// Dispatches `kiln daemon ...` to kilnd and everything else to the CLI.
// Needs `npm run build` (it loads the compiled packages; the CLI as one
// bundled file with V8's code cache, see tools/bundle-cli.mjs).
import { fileURLToPath } from 'node:url';

const self = fileURLToPath(import.meta.url);
const args = process.argv.slice(2);
if (args.length === 1 && ['--help', '-h', 'help', '--version', '-v'].includes(args[0])) {
  // Answered from a module without the CLI's dependencies: loading the bundle costs ~0.1 s of CPU.
  const { USAGE, versionLine } = await import('../packages/cli/dist/usage.js');
  process.stdout.write(args[0] === '--version' || args[0] === '-v' ? versionLine() : USAGE);
} else if (args[0] === 'daemon') {
  const { runDaemon } = await import('../packages/kilnd/dist/index.js');
  process.exit(await runDaemon(args.slice(1)));
} else {
  const { loadCliBundle, repairSnapshotStamp } = await import('./kiln-cli-loader.mjs');
  // bin/kiln chose this path over the start-up snapshot: mend a stamp that lost its mtime.
  if (!process.env.NODE_OPTIONS) repairSnapshotStamp();
  const { main, installLightHeaders } = loadCliBundle().exports;
  // The CLI never calls fetch: keep Connect's headers from loading undici (~40 ms CPU per run).
  installLightHeaders();
  const code = await main(args, { daemonCommand: [process.execPath, self, 'daemon'] });
  process.exit(code);
}
