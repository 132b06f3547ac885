import { spawn } from 'node:child_process';
import { timestampMs } from '@bufbuild/protobuf/wkt';
import type { control, llb } from '@kiln/api';
import { escapeControl, parseByteSize, parseDuration, parseRamBytes, UnavailableError } from '@kiln/common';
import type { CliIo } from '../cli-io.js';
import { connectDaemon, DAEMON_FLAG_SPECS, tlsFlagsOf } from '../daemon.js';
import { parseFlags, type FlagSpecs } from '../flags/flag-parser.js';
import { UsageError } from '../flags/usage-error.js';
import { formatAgo, formatBytes, formatTable } from '../progress/format.js';
import { renderGoTemplate } from './imagetools/go-template.js';

const COMMON = { ...DAEMON_FLAG_SPECS, help: { kind: 'bool', short: 'h' } } as const satisfies FlagSpecs;

export const WORKERS_USAGE = `Usage:  kiln workers [OPTIONS]

List the daemon's workers

Options:
      --addr string         Daemon address (env KILN_ADDR)
      --builder string      Override the configured builder instance (env KILN_BUILDER)
      --tlscacert, --tlscert, --tlskey FILE  Mutual TLS for a TCP daemon (env KILN_TLS_CACERT, KILN_TLS_CERT, KILN_TLS_KEY)
      --filter stringArray  Filter workers (e.g., "labels.pool==gpu", "id==ID"; all must match)
  -h, --help                Print usage
  -v, --verbose             Show each worker's labels, op kinds and GC policy
`;

export const DU_USAGE = `Usage:  kiln du [OPTIONS]

Show disk usage of the build cache

Options:
      --addr string         Daemon address (env KILN_ADDR)
      --builder string      Override the configured builder instance (env KILN_BUILDER)
      --tlscacert, --tlscert, --tlskey FILE  Mutual TLS for a TCP daemon (env KILN_TLS_CACERT, KILN_TLS_CERT, KILN_TLS_KEY)
      --filter stringArray  Provide filter values (type=regular|content, id=, description~=, until=24h, inuse=true|false)
      --format string       Format the output ("table", "pretty", "json" or a Go template; default "table")
  -h, --help                Print usage
  -v, --verbose             Shorthand for "--format=pretty"
`;

export const PRUNE_USAGE = `Usage:  kiln prune [OPTIONS]

Remove build cache

Options:
  -a, --all                     Include internal/frontend images and records in use by nothing
      --addr string             Daemon address (env KILN_ADDR)
      --builder string          Override the configured builder instance (env KILN_BUILDER)
      --tlscacert, --tlscert, --tlskey FILE  Mutual TLS for a TCP daemon (env KILN_TLS_CACERT, KILN_TLS_CERT, KILN_TLS_KEY)
      --filter stringArray      Provide filter values (e.g., "until=24h", "type=regular", "description~=RUN")
  -f, --force                   Do not prompt for confirmation
  -h, --help                    Print usage
      --keep-duration string    Keep cache newer than this limit (e.g., "24h")
      --max-used-space bytes    Maximum amount of disk space allowed to keep for cache
      --min-free-space bytes    Target amount of free disk space after pruning
      --reserved-space bytes    Amount of disk space always allowed to keep for cache
      --verbose                 Provide a more verbose output
`;

const PRUNE_WARNING = 'WARNING! This will remove all dangling build cache. Are you sure you want to continue?';
const PRUNE_ALL_WARNING = 'WARNING! This will remove all build cache. Are you sure you want to continue?';

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
  const rows = [['ID', 'PLATFORMS', 'EXECUTOR', 'LABELS', 'OPS']];
  for (const w of res.record) {
    const labels = Object.entries(w.labels)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => `${k}=${v}`)
      .join(',');
    rows.push([w.id, w.platforms.map(platformString).join(','), w.labels['kiln.executor'] ?? '', labels, compactOps(w.ops)]);
  }
  io.stdout.write(formatTable(rows));
  return 0;
}

/**
 * The op kinds a worker runs, sources grouped: `exec,file,merge,source:{git,local}`;
 * "?" for a worker that announced none (one older than the announcement).
 */
function compactOps(ops: readonly string[]): string {
  if (ops.length === 0) return '?';
  const sources = ops.filter((k) => k.startsWith('source:')).map((k) => k.slice('source:'.length));
  const rest = ops.filter((k) => !k.startsWith('source:'));
  if (sources.length > 0) rest.push(sources.length === 1 ? `source:${sources[0]}` : `source:{${sources.join(',')}}`);
  return rest.join(',');
}

/** One worker as buildx's `inspect` shows it: name, platforms, executor, op kinds, labels, GC policy rules. */
function describeWorker(w: control.WorkerRecord): string {
  const head = formatTable([
    ['Name:', w.id],
    ['Platforms:', w.platforms.map(platformString).join(', ')],
    ...(w.labels['kiln.executor'] ? [['Executor:', w.labels['kiln.executor']]] : []),
    ...(w.ops.length > 0 ? [['Ops:', w.ops.join(', ')]] : []),
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

/** One record as buildx's du formatter exposes it to `--format` (its method names; table cells mark mutable ids and shared sizes with `*`). */
function usageFields(r: control.UsageRecord, now: number, table: boolean): Record<string, unknown> {
  return {
    CreatedAt: r.createdAt ? new Date(timestampMs(r.createdAt)).toISOString() : '',
    Description: r.description,
    ID: table && r.mutable ? `${r.id}*` : r.id,
    LastUsedAt: r.inUse ? 'now' : r.lastUsedAt ? formatAgo(timestampMs(r.lastUsedAt), now) : '',
    Mutable: r.mutable,
    Parents: [...r.parents],
    Reclaimable: !r.inUse,
    Shared: r.shared,
    Size: formatBytes(r.size) + (table && r.shared ? '*' : ''),
    Type: r.recordType,
    UsageCount: Number(r.usageCount),
  };
}

/** buildx's pretty du template (labels in a 14-wide column), one block per record and a blank line. */
function prettyUsage(r: control.UsageRecord, now: number): string {
  const f = usageFields(r, now, false);
  const line = (k: string, v: string) => `${k.padEnd(14)}${v}\n`;
  let out = line('ID:', r.id);
  if (r.parents.length > 0) out += `Parents:\n${r.parents.map((p) => ` - ${p}\n`).join('')}`;
  out += line('Created at:', String(f.CreatedAt)) + line('Mutable:', String(r.mutable)) + line('Reclaimable:', String(!r.inUse));
  out += line('Shared:', String(r.shared)) + line('Size:', String(f.Size));
  if (r.description) out += line('Description:', r.description);
  out += line('Usage count:', String(r.usageCount));
  if (f.LastUsedAt) out += line('Last used:', String(f.LastUsedAt));
  if (r.recordType) out += line('Type:', r.recordType);
  return escapeControl(`${out}\n`);
}

/**
 * `kiln du`: the build cache records as buildx prints them: `--format`
 * table (default), pretty (`--verbose`), json (one object per line) or a Go
 * template (`table ` prefix: with a header row); the summary after table
 * and pretty output without filters.
 */
export async function runDiskUsage(argv: readonly string[], io: CliIo): Promise<number> {
  const { flags, args } = parseFlags(argv, { ...COMMON, filter: { kind: 'list' }, format: { kind: 'string' }, verbose: { kind: 'bool', short: 'v' } });
  if (flags.help) {
    io.stdout.write(DU_USAGE);
    return 0;
  }
  usageArgs(args, 'du');
  if (flags.format !== undefined && flags.verbose) throw new UsageError('--format and --verbose cannot be used together', '--format');
  const format = flags.verbose ? 'pretty' : (flags.format ?? 'table');
  const conn = await connectDaemon({ addr: flags.addr, builder: flags.builder, tls: tlsFlagsOf(flags), env: io.vars, daemonCommand: io.daemonCommand, signal: io.signal });
  const res = await conn.control.diskUsage({ filter: flags.filter }, { signal: io.signal });
  const records = [...res.record].sort((a, b) => Number(b.size - a.size));
  const now = Date.now();
  if (format === 'json') {
    for (const r of records) io.stdout.write(`${JSON.stringify(usageFields(r, now, false))}\n`);
    return 0;
  }
  if (format === 'pretty') {
    for (const r of records) io.stdout.write(prettyUsage(r, now));
  } else if (format === 'table') {
    if (records.length > 0) io.stdout.write(formatTable([USAGE_HEADER, ...records.map((r) => usageRow(r, now))]));
  } else {
    io.stdout.write(templateRows(format, records.map((r) => usageFields(r, now, format.startsWith('table ')))));
    return 0;
  }
  if (flags.filter.length > 0) return 0;
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

const DU_HEADERS: Record<string, string> = {
  ID: 'ID', Parents: 'PARENTS', CreatedAt: 'CREATED AT', Mutable: 'MUTABLE', Reclaimable: 'RECLAIMABLE', Shared: 'SHARED',
  Size: 'SIZE', Description: 'DESCRIPTION', UsageCount: 'USAGE COUNT', LastUsedAt: 'LAST ACCESSED', Type: 'TYPE',
};

/** A Go template per record; with a `table ` prefix, tab-separated cells aligned under a header row (docker's formatter). */
function templateRows(format: string, rows: Record<string, unknown>[]): string {
  if (!format.startsWith('table ')) return escapeControl(rows.map((r) => `${renderGoTemplate(format, r)}\n`).join(''));
  const tmpl = format.slice('table '.length).replace(/\\t/g, '\t');
  const header = renderGoTemplate(tmpl, Object.fromEntries(Object.entries(DU_HEADERS)));
  return formatTable([header.split('\t'), ...rows.map((r) => renderGoTemplate(tmpl, r).split('\t'))]);
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

/** A docker size flag (`--reserved-space 10GB`: go-units RAMInBytes, 1 GB = 1024^3); a bad one is a usage error naming the flag. */
function sizeFlag(v: string | undefined, flag: string): bigint {
  if (v === undefined) return 0n;
  try {
    return BigInt(parseRamBytes(v, flag));
  } catch (err) {
    throw new UsageError(`invalid argument "${v}" for "${flag}" flag: ${(err as Error).message}`, flag);
  }
}

/**
 * buildx's confirmation: the question and " [y/N] " on stdout, one line from
 * stdin; only "y" or "Y" goes on. One deliberate difference: a stdin that is
 * not a terminal and ends without a byte (`</dev/null`, a closed pipe: a
 * script, CI, the shared benchmark's `kiln prune --all`) goes on, as Kiln's
 * CLI contract `kiln prune [--all]` promises, with a note on stderr; buildx
 * would prune nothing there and exit 0, silently keeping the cache.
 */
async function confirm(io: CliIo, question: string): Promise<boolean> {
  io.stdout.write(`${question} [y/N] `);
  const stdin = io.stdin;
  let answeredByEof = false;
  const line = await new Promise<string>((resolve) => {
    let buf = '';
    const atEnd = () => {
      answeredByEof = buf === '';
      done();
    };
    const done = () => {
      stdin.off('data', onData);
      stdin.off('end', atEnd);
      stdin.off('error', done);
      io.signal.removeEventListener('abort', done);
      stdin.pause();
      resolve(buf.split('\n')[0]!.replace(/\r$/, ''));
    };
    const onData = (chunk: Buffer | string) => {
      buf += chunk.toString();
      if (buf.includes('\n')) done();
    };
    stdin.on('data', onData);
    stdin.once('end', atEnd);
    stdin.once('error', done);
    io.signal.addEventListener('abort', done, { once: true });
  });
  if (line === '' && answeredByEof && !(io.stdin as { isTTY?: boolean }).isTTY) {
    io.stdout.write('\n');
    io.stderr.write('kiln prune: stdin is not a terminal and gave no answer: pruning (pass -f to skip the question)\n');
    return true;
  }
  return line.toLowerCase() === 'y';
}

/**
 * `kiln prune [--all]`: after buildx's confirmation (unless `-f`), removes
 * cache records, printing each as it goes (a block each with `--verbose`),
 * then the total. Size caps as buildx: `--reserved-space` (`--keep-storage`,
 * deprecated), `--max-used-space`, `--min-free-space`.
 */
export async function runPrune(argv: readonly string[], io: CliIo): Promise<number> {
  const { flags, args } = parseFlags(argv, {
    ...COMMON,
    all: { kind: 'bool', short: 'a' },
    filter: { kind: 'list' },
    'keep-storage': { kind: 'string' },
    'reserved-space': { kind: 'string' },
    'max-used-space': { kind: 'string' },
    'min-free-space': { kind: 'string' },
    'keep-duration': { kind: 'string' },
    force: { kind: 'bool', short: 'f' },
    verbose: { kind: 'bool' },
  });
  if (flags.help) {
    io.stdout.write(PRUNE_USAGE);
    return 0;
  }
  usageArgs(args, 'prune');
  const keepBytes = flags['reserved-space'] !== undefined ? sizeFlag(flags['reserved-space'], '--reserved-space') : sizeFlag(flags['keep-storage'], '--keep-storage');
  const maxUsedSpace = sizeFlag(flags['max-used-space'], '--max-used-space');
  const minFreeSpace = sizeFlag(flags['min-free-space'], '--min-free-space');
  const keepDurationSeconds = flags['keep-duration'] === undefined ? 0n : BigInt(Math.ceil(parseKeepDuration(flags['keep-duration']) / 1000));
  if (flags['keep-storage'] !== undefined) io.stderr.write('Flag --keep-storage has been deprecated, keep-storage flag has been changed to reserved-space\n');
  if (!flags.force && !(await confirm(io, flags.all ? PRUNE_ALL_WARNING : PRUNE_WARNING))) return 0;
  const conn = await connectDaemon({ addr: flags.addr, builder: flags.builder, tls: tlsFlagsOf(flags), env: io.vars, daemonCommand: io.daemonCommand, signal: io.signal });
  const now = Date.now();
  let total = 0n;
  let printedHeader = false;
  const widths = [52, 12, 10];
  const row = (cells: string[]) => `${cells.map((c, i) => (i < widths.length ? c.padEnd(widths[i]!) : c)).join('  ').trimEnd()}\n`;
  for await (const res of conn.control.prune({ all: flags.all, filter: flags.filter, keepBytes, maxUsedSpace, minFreeSpace, keepDurationSeconds }, { signal: io.signal })) {
    if (!res.record) continue;
    total += res.record.size;
    if (flags.verbose) {
      io.stdout.write(prettyUsage(res.record, now));
      continue;
    }
    if (!printedHeader) {
      io.stdout.write(row(USAGE_HEADER));
      printedHeader = true;
    }
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
