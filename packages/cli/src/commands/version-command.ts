import type { CliIo } from '../cli-io.js';
import { connectDaemon, DAEMON_FLAG_SPECS, tlsFlagsOf } from '../daemon.js';
import { parseFlags, type FlagSpecs } from '../flags/flag-parser.js';
import { UsageError } from '../flags/usage-error.js';
import { formatTable } from '../progress/format.js';
import { KILN_VERSION } from '../version.js';
import { asKilnError, describeError, escapeControl } from '@kiln/common';

export const VERSION_USAGE = `Usage:  kiln version [OPTIONS]

Show the Kiln client and daemon versions (the daemon is asked, never started)

Options:
      --addr string     Daemon address (env KILN_ADDR)
      --builder string  Override the configured builder instance (env KILN_BUILDER)
      --tlscacert, --tlscert, --tlskey FILE  Mutual TLS for a TCP daemon (env KILN_TLS_CACERT, KILN_TLS_CERT, KILN_TLS_KEY)
      --format string   Format the output ("pretty", "json") (default "pretty")
  -h, --help            Print usage
`;

export const VERSION_FLAGS = { ...DAEMON_FLAG_SPECS, format: { kind: 'string' }, help: { kind: 'bool', short: 'h' } } as const satisfies FlagSpecs;

export { versionLine } from '../usage.js';

/**
 * `kiln version`: the client's version, then the daemon's (Control.Info).
 * An unreachable daemon still prints the client part, then fails (exit 1),
 * as `docker version` does.
 */
export async function runVersion(argv: readonly string[], io: CliIo): Promise<number> {
  const { flags, args } = parseFlags(argv, VERSION_FLAGS);
  if (flags.help) {
    io.stdout.write(VERSION_USAGE);
    return 0;
  }
  if (args.length > 0) throw new UsageError(`"kiln version" accepts no arguments, got "${args[0]}"`, 'ARGS');
  const format = flags.format ?? 'pretty';
  if (format !== 'pretty' && format !== 'json') throw new UsageError(`invalid argument "${format}" for "--format" flag: want pretty or json`, '--format');
  const client = { version: KILN_VERSION, node: process.version, os: process.platform, arch: process.arch };
  let server: { address: string; version: string; revision: string; tiers: string[] } | undefined;
  let error: string | undefined;
  try {
    // daemonCommand [] : asking for a version never starts a daemon.
    const conn = await connectDaemon({ addr: flags.addr, builder: flags.builder, tls: tlsFlagsOf(flags), env: io.vars, daemonCommand: [], signal: io.signal });
    server = { address: conn.address, version: conn.info.version, revision: conn.info.revision, tiers: [...conn.info.tiers] };
  } catch (err) {
    error = describeError(asKilnError(err));
  }
  if (format === 'json') {
    io.stdout.write(`${JSON.stringify({ client, server: server ?? null, ...(error ? { error } : {}) }, null, 2)}\n`);
  } else {
    io.stdout.write(`Client:\n${indent(formatTable([['Version:', client.version], ['Node:', client.node], ['OS/Arch:', `${client.os}/${client.arch}`]]))}\n`);
    if (server) {
      const rows = [['Address:', server.address], ['Version:', server.version]];
      if (server.revision) rows.push(['Revision:', server.revision]);
      if (server.tiers.length > 0) rows.push(['Tiers:', server.tiers.join(', ')]);
      io.stdout.write(`Server:\n${indent(formatTable(rows))}`);
    }
  }
  if (error) {
    io.stderr.write(`ERROR: ${escapeControl(error)}\n`);
    return 1;
  }
  return 0;
}

function indent(text: string): string {
  return text.replace(/^(?=.)/gm, ' ');
}
