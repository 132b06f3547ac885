import { spawn } from 'node:child_process';
import { timestampMs } from '@bufbuild/protobuf/wkt';
import type { control, llb } from '@kiln/api';
import { parseByteSize, parseDuration, UnavailableError } from '@kiln/common';
import type { CliIo } from '../cli-io.js';
import { connectDaemon, DAEMON_FLAG_SPECS, tlsFlagsOf } from '../daemon.js';
import { parseFlags, type FlagSpecs } from '../flags/flag-parser.js';
import { UsageError } from '../flags/usage-error.js';
import { formatAgo, formatBytes, formatTable } from '../progress/format.js';

const COMMON = { ...DAEMON_FLAG_SPECS, help: { kind: 'bool', short: 'h' } } as const satisfies FlagSpecs;

export const WORKERS_USAGE = `Usage:  kiln workers [OPTIONS]

List the daemon's workers

Options:
      --addr string         Daemon address (env KILN_ADDR)
      --builder string      Override the configured builder instance (env KILN_BUILDER)
      --tlscacert, --tlscert, --tlskey FILE  Mutual TLS for a TCP daemon (env KILN_TLS_CACERT, KILN_TLS_CERT, KILN_TLS_KEY)
      --filter stringArray  Filter workers (e.g., "labels.pool==gpu", "id==ID"; all must match)
  -h, --help                Print usage
  -v, --verbose             Show each worker's labels and GC policy
`;

export const DU_USAGE = `Usage:  kiln du [OPTIONS]

Show disk usage of the build cache

Options:
      --addr string         Daemon address (env KILN_ADDR)
      --builder string      Override the configured builder instance (env KILN_BUILDER)
      --tlscacert, --tlscert, --tlskey FILE  Mutual TLS for a TCP daemon (env KILN_TLS_CACERT, KILN_TLS_CERT, KILN_TLS_KEY)
      --filter stringArray  Provide filter values (type=regular|content, id=, description~=, until=24h, inuse=true|false)
  -h, --help                Print usage
  -v, --verbose             Show parents, descriptions and usage counts
`;

export const PRUNE_USAGE = `Usage:  kiln prune [OPTIONS]

Remove build cache

Options:
  -a, --all                     Include internal/frontend images and records in use by nothing
      --addr string             Daemon address (env KILN_ADDR)
      --builder string          Override the configured builder instance (env KILN_BUILDER)
      --tlscacert, --tlscert, --tlskey FILE  Mutual TLS for a TCP daemon (env KILN_TLS_CACERT, KILN_TLS_CERT, KILN_TLS_KEY)
      --filter stringArray      Provide filter values (e.g., "until=24h", "type=regular", "description~=RUN")
  -f, --force                   Do not prompt for confirmation (kiln never prompts)
  -h, --help                    Print usage
      --keep-duration string    Keep cache newer than this limit (e.g., "24h")
      --keep-storage string     Amount of disk space to keep for cache (e.g., "10GB")
`;

export const DAEMON_USAGE = `Usage:  kiln daemon [kilnd flags]

Run the Kiln daemon in the foreground (all tiers in one process by default)

Flags are passed to the daemon as they are, e.g. --tier NAME, --config FILE, --addr URL, --root DIR.
`;

function usageArgs(args: string[], command: string): void {
  if (args.length > 0) throw new UsageError(`"kiln ${command}" accepts no arguments, got "${args[0]}"`, 'ARGS');
}

function platformString(p: llb.Platform): string {
  return [p.os, p.architecture, p.variant].filter((s) => s !== '').join('/');
}

/** `kiln workers`: a table of the daemon's workers. */
export async function runWorkers(argv: readonly string[], io: CliIo): Promise<number> {
  const { flags, args } = parseFlags(argv, { ...COMMON, filter: { kind: 'list' }, verbose: { kind: 'bool', short: 'v' } });
  if (flags.help) {
    io.stdout.write(WORKERS_USAGE);
    return 0;
  }
  usageArgs(args, 'workers');
  const conn = await connectDaemon({ addr: flags.addr, builder: flags.builder, tls: tlsFlagsOf(flags), env: io.vars, daemonCommand: io.daemonCommand, signal: io.signal });
  const res = await conn.control.listWorkers({ filter: flags.filter }, { signal: io.signal });
  if (flags.verbose) {
    io.stdout.write(res.record.map(describeWorker).join('\n'));
    return 0;
  }
  const rows = [['ID', 'PLATFORMS', 'LABELS']];
  for (const w of res.record) {
    const labels = Object.entries(w.labels)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => `${k}=${v}`)
      .join(',');
    rows.push([w.id, w.platforms.map(platformString).join(','), labels]);
  }
  io.stdout.write(formatTable(rows));
  return 0;
}

/** One worker as buildx's `inspect` shows it: name, platforms, labels, GC policy rules. */
function describeWorker(w: control.WorkerRecord): string {
  const head = formatTable([
    ['Name:', w.id],
    ['Platforms:', w.platforms.map(platformString).join(', ')],
  ]);
  const labels = Object.entries(w.labels).sort(([a], [b]) => a.localeCompare(b));
  let out = head + (labels.length > 0 ? `Labels:\n${indent(formatTable(labels.map(([k, v]) => [`${k}:`, v])))}` : '');
  for (const [i, p] of w.gcPolicy.entries()) {
    const rows = [['All:', String(p.all)]];
    if (p.filters.length > 0) rows.push(['Filters:', p.filters.join(',')]);
    if (p.keepDurationSeconds > 0n) rows.push(['Keep Duration:', goDuration(Number(p.keepDurationSeconds))]);
    if (p.keepBytes > 0n) rows.push(['Keep Bytes:', formatBytes(p.keepBytes)]);
    out += `GC Policy rule#${i}:\n${indent(formatTable(rows))}`;
  }
  return out;
}

function indent(text: string): string {
  return text.replace(/^(?=.)/gm, '  ');
}

/** Seconds as Go prints a time.Duration: "48h0m0s", "30m0s", "45s". */
function goDuration(totalSeconds: number): string {
  const h = Math.floor(totalSeconds / 3600);
  const m = Math.floor((totalSeconds % 3600) / 60);
  const s = totalSeconds % 60;
  return h > 0 ? `${h}h${m}m${s}s` : m > 0 ? `${m}m${s}s` : `${s}s`;
}

function usageRow(r: control.UsageRecord, now: number): string[] {
  return [
    r.mutable ? `${r.id}*` : r.id,
    String(!r.inUse),
    formatBytes(r.size),
    r.inUse ? 'now' : r.lastUsedAt ? formatAgo(timestampMs(r.lastUsedAt), now) : '',
  ];
}

const USAGE_HEADER = ['ID', 'RECLAIMABLE', 'SIZE', 'LAST ACCESSED'];

/** `kiln du`: the build cache records, reclaimable and total sizes. */
export async function runDiskUsage(argv: readonly string[], io: CliIo): Promise<number> {
  const { flags, args } = parseFlags(argv, { ...COMMON, filter: { kind: 'list' }, verbose: { kind: 'bool', short: 'v' } });
  if (flags.help) {
    io.stdout.write(DU_USAGE);
    return 0;
  }
  usageArgs(args, 'du');
  const conn = await connectDaemon({ addr: flags.addr, builder: flags.builder, tls: tlsFlagsOf(flags), env: io.vars, daemonCommand: io.daemonCommand, signal: io.signal });
  const res = await conn.control.diskUsage({ filter: flags.filter }, { signal: io.signal });
  const records = [...res.record].sort((a, b) => Number(b.size - a.size));
  const now = Date.now();
  if (flags.verbose) {
    for (const r of records) {
      const rows = [
        ['ID:', r.id],
        ['Parents:', r.parents.join(', ')],
        ['Created at:', r.createdAt ? new Date(timestampMs(r.createdAt)).toISOString() : ''],
        ['Mutable:', String(r.mutable)],
        ['Reclaimable:', String(!r.inUse)],
        ['Shared:', String(r.shared)],
        ['Size:', formatBytes(r.size)],
        ['Description:', r.description],
        ['Usage count:', String(r.usageCount)],
        ['Last used:', r.lastUsedAt ? formatAgo(timestampMs(r.lastUsedAt), now) : ''],
        ['Type:', r.recordType],
      ];
      io.stdout.write(`${formatTable(rows)}\n`);
    }
  } else if (records.length > 0) {
    io.stdout.write(formatTable([USAGE_HEADER, ...records.map((r) => usageRow(r, now))]));
  }
  let total = 0n;
  let reclaimable = 0n;
  let shared = 0n;
  for (const r of records) {
    total += r.size;
    if (!r.inUse) reclaimable += r.size;
    if (r.shared) shared += r.size;
  }
  const summary: string[][] = [];
  if (shared > 0n) summary.push(['Shared:', formatBytes(shared)], ['Private:', formatBytes(total - shared)]);
  summary.push(['Reclaimable:', formatBytes(reclaimable)], ['Total:', formatBytes(total)]);
  io.stdout.write(formatTable(summary));
  return 0;
}

/** Parses sizes like "10GB", "512MiB", "1000" into bytes; a bad one is a usage error naming the flag. */
export function parseBytes(v: string, flag: string): bigint {
  try {
    return BigInt(parseByteSize(v, flag));
  } catch {
    throw new UsageError(`invalid argument "${v}" for "${flag}" flag: want a size like 10GB`, flag);
  }
}

/** Parses `--keep-duration` ("24h", "30m", "7d"); a bad one is a usage error naming the flag. */
function parseKeepDuration(v: string): number {
  try {
    return parseDuration(v, '--keep-duration');
  } catch {
    throw new UsageError(`invalid argument "${v}" for "--keep-duration" flag: want a duration like 24h`, '--keep-duration');
  }
}

/** `kiln prune [--all]`: removes cache records, printing each as it goes, then the total. */
export async function runPrune(argv: readonly string[], io: CliIo): Promise<number> {
  const { flags, args } = parseFlags(argv, {
    ...COMMON,
    all: { kind: 'bool', short: 'a' },
    filter: { kind: 'list' },
    'keep-storage': { kind: 'string' },
    'keep-duration': { kind: 'string' },
    force: { kind: 'bool', short: 'f' },
  });
  if (flags.help) {
    io.stdout.write(PRUNE_USAGE);
    return 0;
  }
  usageArgs(args, 'prune');
  const keepBytes = flags['keep-storage'] === undefined ? 0n : parseBytes(flags['keep-storage'], '--keep-storage');
  const keepDurationSeconds = flags['keep-duration'] === undefined ? 0n : BigInt(Math.ceil(parseKeepDuration(flags['keep-duration']) / 1000));
  const conn = await connectDaemon({ addr: flags.addr, builder: flags.builder, tls: tlsFlagsOf(flags), env: io.vars, daemonCommand: io.daemonCommand, signal: io.signal });
  const now = Date.now();
  let total = 0n;
  let printedHeader = false;
  const widths = [52, 12, 10];
  const row = (cells: string[]) => `${cells.map((c, i) => (i < widths.length ? c.padEnd(widths[i]!) : c)).join('  ').trimEnd()}\n`;
  for await (const res of conn.control.prune({ all: flags.all, filter: flags.filter, keepBytes, keepDurationSeconds }, { signal: io.signal })) {
    if (!res.record) continue;
    if (!printedHeader) {
      io.stdout.write(row(USAGE_HEADER));
      printedHeader = true;
    }
    total += res.record.size;
    io.stdout.write(row(usageRow(res.record, now)));
  }
  io.stdout.write(`Total:\t${formatBytes(total)}\n`);
  return 0;
}

/** `kiln daemon ...`: runs the daemon command in the foreground with the given flags. */
export async function runDaemon(argv: readonly string[], io: CliIo): Promise<number> {
  if (argv[0] === '--help' || argv[0] === '-h') {
    io.stdout.write(DAEMON_USAGE);
    return 0;
  }
  const [cmd, ...rest] = io.daemonCommand;
  if (cmd === undefined) throw new UnavailableError('no daemon command is configured');
  const child = spawn(cmd, [...rest, ...argv], { stdio: 'inherit', env: io.vars as NodeJS.ProcessEnv });
  const stop = () => child.kill('SIGTERM');
  io.signal.addEventListener('abort', stop, { once: true });
  try {
    return await new Promise<number>((resolve, reject) => {
      child.once('error', (err) => reject(new UnavailableError(`failed to start the daemon (${io.daemonCommand.join(' ')}): ${err.message}`)));
      child.once('exit', (code, signal) => resolve(code ?? (signal ? 128 + (signalNumber(signal) ?? 0) : 1)));
    });
  } finally {
    io.signal.removeEventListener('abort', stop);
  }
}

function signalNumber(signal: NodeJS.Signals): number | undefined {
  return ({ SIGINT: 2, SIGKILL: 9, SIGTERM: 15 } as Record<string, number>)[signal];
}
