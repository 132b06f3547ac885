import { timestampMs } from '@bufbuild/protobuf/wkt';
import type { control } from '@kiln/api';
import { asKilnError, KilnError } from '@kiln/common';
import { spawn } from 'node:child_process';
import { createReadStream, existsSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { decodeHistoryBundle, encodeHistoryBundle } from '../history/history-bundle.js';
import type { CliIo } from '../cli-io.js';
import { connectDaemon, DAEMON_FLAG_SPECS, tlsFlagsOf } from '../daemon.js';
import { parseFlags, type FlagSpecs } from '../flags/flag-parser.js';
import { UsageError } from '../flags/usage-error.js';
import { formatAgo, formatTable } from '../progress/format.js';
import { createProgressPrinter } from '../progress/progress.js';
import { formatCacheMisses } from '../progress/cache-misses.js';

export const HISTORY_USAGE = `Usage:  kiln history COMMAND

Commands to work on build records

Commands:
  explain     Explain why steps of a build missed the cache
  export      Export build records into a bundle file
  import      Import build records from a bundle file
  inspect     Inspect a build record
  logs        Print the logs of a build record
  ls          List build records
  open        Open a build record in the daemon's dashboard
  rm          Remove build records

Run 'kiln history COMMAND --help' for more information on a command.
`;

const HISTORY_LS_USAGE = `Usage:  kiln history ls [OPTIONS]

List build records

Options:
      --addr string     Daemon address (env KILN_ADDR)
      --builder string  Override the configured builder instance (env KILN_BUILDER)
      --tlscacert, --tlscert, --tlskey FILE  Mutual TLS for a TCP daemon (env KILN_TLS_CACERT, KILN_TLS_CERT, KILN_TLS_KEY)
      --format string   Format the output ("table", "json") (default "table")
  -h, --help            Print usage
`;

const HISTORY_INSPECT_USAGE = `Usage:  kiln history inspect [OPTIONS] [REF]

Inspect a build record (the newest one without REF; REF may be a unique prefix)

Options:
      --addr string     Daemon address (env KILN_ADDR)
      --builder string  Override the configured builder instance (env KILN_BUILDER)
      --tlscacert, --tlscert, --tlskey FILE  Mutual TLS for a TCP daemon (env KILN_TLS_CACERT, KILN_TLS_CERT, KILN_TLS_KEY)
      --format string   Format the output ("pretty", "json") (default "pretty")
  -h, --help            Print usage
`;

const HISTORY_EXPLAIN_USAGE = `Usage:  kiln history explain [OPTIONS] [REF]

Explain why steps of a build missed the cache (the newest build without REF): one line per
step that ran, naming what changed against the closest earlier build of the same Dockerfile,
context and target

Options:
      --addr string     Daemon address (env KILN_ADDR)
      --tlscacert, --tlscert, --tlskey FILE  Mutual TLS for a TCP daemon (env KILN_TLS_CACERT, KILN_TLS_CERT, KILN_TLS_KEY)
      --format string   Format the output ("pretty", "json") (default "pretty")
  -h, --help            Print usage
`;

const HISTORY_LOGS_USAGE = `Usage:  kiln history logs [OPTIONS] [REF]

Print the logs of a build record (the newest one without REF)

Options:
      --addr string       Daemon address (env KILN_ADDR)
      --builder string    Override the configured builder instance (env KILN_BUILDER)
      --tlscacert, --tlscert, --tlskey FILE  Mutual TLS for a TCP daemon (env KILN_TLS_CACERT, KILN_TLS_CERT, KILN_TLS_KEY)
  -h, --help              Print usage
      --progress string   Set type of progress output ("plain", "rawjson") (default "plain")
`;

const HISTORY_RM_USAGE = `Usage:  kiln history rm [OPTIONS] [REF...]

Remove build records

Options:
      --addr string   Daemon address (env KILN_ADDR)
      --builder stringOverride the configured builder instance (env KILN_BUILDER)
      --tlscacert, --tlscert, --tlskey FILE  Mutual TLS for a TCP daemon (env KILN_TLS_CACERT, KILN_TLS_CERT, KILN_TLS_KEY)
  -a, --all           Remove all build records
  -h, --help          Print usage
`;

const HISTORY_EXPORT_USAGE = `Usage:  kiln history export [OPTIONS] [REF...]

Export build records (the newest one without REF) into a bundle: a tar with each record,
its logs, cache-miss explanations and provenance (docs/HISTORY-BUNDLE.md)

Options:
      --addr string     Daemon address (env KILN_ADDR)
      --builder string  Override the configured builder instance (env KILN_BUILDER)
      --tlscacert, --tlscert, --tlskey FILE  Mutual TLS for a TCP daemon (env KILN_TLS_CACERT, KILN_TLS_CERT, KILN_TLS_KEY)
  -a, --all             Export all finished build records
  -o, --output string   Output file path ("-" or none: stdout, unless it is a terminal)
  -h, --help            Print usage
`;

const HISTORY_IMPORT_USAGE = `Usage:  kiln history import [OPTIONS] [-]

Import build records from a bundle made by "kiln history export"; they show in
"kiln history ls" marked as imported

Options:
      --addr string         Daemon address (env KILN_ADDR)
      --builder string      Override the configured builder instance (env KILN_BUILDER)
      --tlscacert, --tlscert, --tlskey FILE  Mutual TLS for a TCP daemon (env KILN_TLS_CACERT, KILN_TLS_CERT, KILN_TLS_KEY)
  -f, --file stringArray    Import from a file path (default "-": stdin)
  -h, --help                Print usage
`;

const HISTORY_OPEN_USAGE = `Usage:  kiln history open [OPTIONS] [REF]

Print the URL of a build record (the newest one without REF) in the daemon's dashboard
(kiln daemon --dashboard ADDR); with --browser, also open it with xdg-open

Options:
      --addr string     Daemon address (env KILN_ADDR)
      --builder string  Override the configured builder instance (env KILN_BUILDER)
      --tlscacert, --tlscert, --tlskey FILE  Mutual TLS for a TCP daemon (env KILN_TLS_CACERT, KILN_TLS_CERT, KILN_TLS_KEY)
      --browser         Open the URL with xdg-open as well
  -h, --help            Print usage
`;

const COMMON = { ...DAEMON_FLAG_SPECS, help: { kind: 'bool', short: 'h' } } as const satisfies FlagSpecs;

/** Each subcommand's usage, for help and shell completion. */
export const HISTORY_SUB_USAGES: Readonly<Record<string, string>> = {
  ls: HISTORY_LS_USAGE,
  inspect: HISTORY_INSPECT_USAGE,
  explain: HISTORY_EXPLAIN_USAGE,
  logs: HISTORY_LOGS_USAGE,
  rm: HISTORY_RM_USAGE,
  export: HISTORY_EXPORT_USAGE,
  import: HISTORY_IMPORT_USAGE,
  open: HISTORY_OPEN_USAGE,
};

const SUBCOMMANDS: Record<string, (argv: readonly string[], io: CliIo) => Promise<number>> = {
  ls: runHistoryList,
  inspect: runHistoryInspect,
  explain: runHistoryExplain,
  logs: runHistoryLogs,
  rm: runHistoryRemove,
  export: runHistoryExport,
  import: runHistoryImport,
  open: runHistoryOpen,
};

/** `kiln history ls|inspect|logs|rm`: the daemon's build records. */
export async function runHistory(argv: readonly string[], io: CliIo): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h') {
    io.stdout.write(HISTORY_USAGE);
    return 0;
  }
  const run = SUBCOMMANDS[sub];
  if (!run) throw new UsageError(`unknown command "${sub}" for "kiln history" (see 'kiln history --help')`, 'COMMAND');
  return run(rest, io);
}

/** A record's display name: the Dockerfile and the target, as the build asked for them. */
export function historyName(r: control.BuildHistoryRecord): string {
  const file = r.frontendAttrs['filename'] ?? (r.frontend ? 'Dockerfile' : '(definition)');
  const target = r.frontendAttrs['target'];
  return target ? `${file}:${target}` : file;
}

function statusWord(status: string): string {
  return status.charAt(0).toUpperCase() + status.slice(1);
}

/** Duration in seconds with one decimal; a running build counts up to now. */
function durationMs(r: control.BuildHistoryRecord, now: number): number {
  const start = r.createdAt ? timestampMs(r.createdAt) : now;
  return (r.completedAt ? timestampMs(r.completedAt) : now) - start;
}

function seconds(ms: number): string {
  return `${(Math.max(0, ms) / 1000).toFixed(1)}s`;
}

function cacheRatio(r: control.BuildHistoryRecord): number {
  return r.numTotalSteps > 0 ? r.numCachedSteps / r.numTotalSteps : 0;
}

function toJson(r: control.BuildHistoryRecord, now: number): Record<string, unknown> {
  return {
    ref: r.ref,
    name: historyName(r),
    frontend: r.frontend,
    status: r.status,
    created_at: r.createdAt ? new Date(timestampMs(r.createdAt)).toISOString() : undefined,
    completed_at: r.completedAt ? new Date(timestampMs(r.completedAt)).toISOString() : undefined,
    duration_seconds: Math.round(durationMs(r, now)) / 1000,
    total_steps: r.numTotalSteps,
    completed_steps: r.numCompletedSteps,
    cached_steps: r.numCachedSteps,
    cache_hit_ratio: Math.round(cacheRatio(r) * 1000) / 1000,
    warnings: r.numWarnings,
    exporters: r.exporters,
    exporter_response: r.exporterResponse,
    error: r.error || undefined,
    error_code: r.errorCode || undefined,
    imported: r.imported || undefined,
  };
}

/** gRPC's numeric codes (buildx's Error.Code) by Kiln's error code names. */
const GRPC_CODES: Record<string, number> = {
  canceled: 1, unknown: 2, invalid_argument: 3, deadline_exceeded: 4, not_found: 5, already_exists: 6, permission_denied: 7, resource_exhausted: 8,
  failed_precondition: 9, aborted: 10, out_of_range: 11, unimplemented: 12, internal: 13, unavailable: 14, data_loss: 15, unauthenticated: 16,
};

/**
 * `history inspect --format json` with buildx's inspect output fields
 * (Name, Ref, Dockerfile, Target, Platform, NamedContexts, StartedAt,
 * CompletedAt, Duration in nanoseconds, Status completed|running|failed|
 * canceled, Error {Code, Message}, step counts, BuildArgs, Labels, Config
 * from the frontend attrs, the rest in Config.RestRaw); empty fields left
 * out as buildx's omitempty does.
 */
function inspectJson(r: control.BuildHistoryRecord, now: number): Record<string, unknown> {
  const attrs = { ...r.frontendAttrs };
  const take = (k: string): string | undefined => {
    const v = attrs[k];
    delete attrs[k];
    return v;
  };
  const keyValues = (prefix: string) => {
    const out = Object.entries(attrs)
      .filter(([k]) => k.startsWith(prefix))
      .map(([k, v]) => ({ Name: k.slice(prefix.length), ...(v ? { Value: v } : {}) }))
      .sort((a, b) => (a.Name < b.Name ? -1 : a.Name > b.Name ? 1 : 0));
    return out.length > 0 ? out : undefined;
  };
  const iso = (t: typeof r.createdAt) => (t ? new Date(timestampMs(t)).toISOString() : undefined);
  const dockerfile = take('filename');
  const target = take('target');
  const platform = take('platform');
  const status = r.status === 'error' ? 'failed' : r.status === 'canceled' || r.status === 'running' ? r.status : 'completed';
  const config: Record<string, unknown> = {};
  const setConfig = (field: string, key: string, map: (v: string) => unknown = (v) => v) => {
    const v = take(key);
    if (v !== undefined && v !== '') config[field] = map(v);
  };
  setConfig('Network', 'force-network-mode');
  const extraHosts = take('add-hosts');
  if (extraHosts) config.ExtraHosts = extraHosts.split(',');
  setConfig('Hostname', 'hostname');
  setConfig('ImageResolveMode', 'image-resolve-mode');
  if (r.frontendAttrs['no-cache'] !== undefined) {
    const v = take('no-cache')!;
    if (v === '') config.NoCache = true;
    else config.NoCacheFilter = v.split(',');
  }
  setConfig('ShmSize', 'shm-size');
  setConfig('Ulimit', 'ulimit');
  const epoch = attrs['build-arg:SOURCE_DATE_EPOCH'];
  if (epoch) config.SourceDateEpoch = epoch;
  const rest = Object.entries(attrs)
    .filter(([k]) => !/^(vcs:|build-arg:|label:|context:|attest:)/.test(k))
    .map(([k, v]) => ({ Name: k, ...(v ? { Value: v } : {}) }))
    .sort((a, b) => (a.Name < b.Name ? -1 : a.Name > b.Name ? 1 : 0));
  if (rest.length > 0) config.RestRaw = rest;
  const durationNs = Math.max(0, Math.round(durationMs(r, now))) * 1_000_000;
  return {
    Name: historyName(r),
    Ref: r.ref,
    ...(dockerfile ? { Dockerfile: dockerfile } : {}),
    ...(target ? { Target: target } : {}),
    ...(platform ? { Platform: platform.split(',') } : {}),
    ...(keyValues('context:') ? { NamedContexts: keyValues('context:') } : {}),
    ...(iso(r.createdAt) ? { StartedAt: iso(r.createdAt) } : {}),
    ...(iso(r.completedAt) ? { CompletedAt: iso(r.completedAt) } : {}),
    ...(durationNs > 0 ? { Duration: durationNs } : {}),
    Status: status,
    ...(r.error ? { Error: { ...(GRPC_CODES[r.errorCode] ? { Code: GRPC_CODES[r.errorCode] } : {}), Message: r.error } } : {}),
    NumCompletedSteps: r.numCompletedSteps,
    NumTotalSteps: r.numTotalSteps,
    NumCachedSteps: r.numCachedSteps,
    ...(keyValues('build-arg:') ? { BuildArgs: keyValues('build-arg:') } : {}),
    ...(keyValues('label:') ? { Labels: keyValues('label:') } : {}),
    Config: config,
  };
}

function oneRef(args: string[], command: string): string {
  if (args.length > 1) throw new UsageError(`"kiln history ${command}" accepts at most 1 argument, got ${args.length}`, 'REF');
  return args[0] ?? '';
}

async function connect(flags: { addr?: string | undefined; builder?: string | undefined; tlscacert?: string | undefined; tlscert?: string | undefined; tlskey?: string | undefined }, io: CliIo) {
  return connectDaemon({ addr: flags.addr, builder: flags.builder, tls: tlsFlagsOf(flags), env: io.vars, daemonCommand: io.daemonCommand, signal: io.signal });
}

/** `kiln history ls`: newest first, as a table or one JSON object per line. */
export async function runHistoryList(argv: readonly string[], io: CliIo): Promise<number> {
  const { flags, args } = parseFlags(argv, { ...COMMON, format: { kind: 'string' } });
  if (flags.help) {
    io.stdout.write(HISTORY_LS_USAGE);
    return 0;
  }
  if (args.length > 0) throw new UsageError(`"kiln history ls" accepts no arguments, got "${args[0]}"`, 'ARGS');
  const format = flags.format ?? 'table';
  if (format !== 'table' && format !== 'json') throw new UsageError(`invalid argument "${format}" for "--format" flag: want table or json`, '--format');
  const conn = await connect(flags, io);
  const { records } = await conn.control.listHistory({}, { signal: io.signal });
  const now = Date.now();
  if (format === 'json') {
    for (const r of records) io.stdout.write(`${JSON.stringify(toJson(r, now))}\n`);
    return 0;
  }
  const rows = [['BUILD ID', 'NAME', 'STATUS', 'CREATED AT', 'DURATION']];
  for (const r of records) {
    rows.push([r.ref, historyName(r), `${statusWord(r.status)}${r.imported ? ' (imported)' : ''}`, r.createdAt ? formatAgo(timestampMs(r.createdAt), now) : '', seconds(durationMs(r, now))]);
  }
  io.stdout.write(formatTable(rows));
  return 0;
}

/** `kiln history inspect [REF]`: one record's summary (status, duration, steps, cache hit ratio, error). */
export async function runHistoryInspect(argv: readonly string[], io: CliIo): Promise<number> {
  const { flags, args } = parseFlags(argv, { ...COMMON, format: { kind: 'string' } });
  if (flags.help) {
    io.stdout.write(HISTORY_INSPECT_USAGE);
    return 0;
  }
  const format = flags.format ?? 'pretty';
  if (format !== 'pretty' && format !== 'json') throw new UsageError(`invalid argument "${format}" for "--format" flag: want pretty or json`, '--format');
  const ref = oneRef(args, 'inspect');
  const conn = await connect(flags, io);
  const { record: r } = await conn.control.inspectHistory({ ref }, { signal: io.signal });
  if (!r) return 1;
  const now = Date.now();
  if (format === 'json') {
    io.stdout.write(`${JSON.stringify(inspectJson(r, now), null, 2)}\n`);
    return 0;
  }
  const iso = (t: typeof r.createdAt) => (t ? new Date(timestampMs(t)).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC') : '');
  const rows: string[][] = [
    ['Ref:', r.ref],
    ['Name:', historyName(r)],
    ['Frontend:', r.frontend || '(definition)'],
  ];
  if (r.frontendAttrs['target']) rows.push(['Target:', r.frontendAttrs['target']]);
  rows.push(['Status:', statusWord(r.status)], ['Created:', iso(r.createdAt)]);
  if (r.completedAt) rows.push(['Completed:', iso(r.completedAt)]);
  rows.push(
    ['Duration:', seconds(durationMs(r, now))],
    ['Build Steps:', `${r.numCompletedSteps}/${r.numTotalSteps} (${Math.round(cacheRatio(r) * 100)}% cached)`],
  );
  if (r.exporters.length > 0) rows.push(['Exporters:', r.exporters.join(', ')]);
  for (const [k, v] of Object.entries(r.exporterResponse).sort(([a], [b]) => a.localeCompare(b))) {
    if (v.length <= 200) rows.push([`${k}:`, v]);
  }
  if (r.numWarnings > 0) rows.push(['Warnings:', String(r.numWarnings)]);
  if (r.imported) rows.push(['Imported:', 'yes (kiln history import)']);
  if (r.logsTruncated) rows.push(['Logs:', 'truncated (per-build limit reached)']);
  if (r.error) rows.push(['Error:', `${r.error}${r.errorCode ? ` (${r.errorCode})` : ''}`]);
  io.stdout.write(formatTable(rows));
  return 0;
}

/** `kiln history explain [REF]`: why each step of a build that ran missed the cache. */
export async function runHistoryExplain(argv: readonly string[], io: CliIo): Promise<number> {
  const { flags, args } = parseFlags(argv, { ...COMMON, format: { kind: 'string' } });
  if (flags.help) {
    io.stdout.write(HISTORY_EXPLAIN_USAGE);
    return 0;
  }
  const format = flags.format ?? 'pretty';
  if (format !== 'pretty' && format !== 'json') throw new UsageError(`invalid argument "${format}" for "--format" flag: want pretty or json`, '--format');
  const ref = oneRef(args, 'explain');
  const conn = await connect(flags, io);
  const { cacheMisses } = await conn.control.inspectHistory({ ref }, { signal: io.signal });
  if (format === 'json') {
    io.stdout.write(`${JSON.stringify(cacheMisses.map((m) => ({ vertex: m.vertex, name: m.name, reason: m.reason })), null, 2)}\n`);
    return 0;
  }
  io.stdout.write(formatCacheMisses(cacheMisses));
  return 0;
}

/** `kiln history logs [REF]`: replays the kept progress (plain, like `--progress=plain`). */
export async function runHistoryLogs(argv: readonly string[], io: CliIo): Promise<number> {
  const { flags, args } = parseFlags(argv, { ...COMMON, progress: { kind: 'string' } });
  if (flags.help) {
    io.stdout.write(HISTORY_LOGS_USAGE);
    return 0;
  }
  const mode = flags.progress ?? 'plain';
  if (mode !== 'plain' && mode !== 'rawjson') throw new UsageError(`invalid argument "${mode}" for "--progress" flag: want plain or rawjson`, '--progress');
  const ref = oneRef(args, 'logs');
  const conn = await connect(flags, io);
  const printer = createProgressPrinter(mode, io.stdout);
  for await (const { status } of conn.control.historyLogs({ ref }, { signal: io.signal })) if (status) printer.write(status);
  printer.close();
  return 0;
}

/** `kiln history rm REF... | --all`: removes records, printing each removed ref. */
export async function runHistoryRemove(argv: readonly string[], io: CliIo): Promise<number> {
  const { flags, args } = parseFlags(argv, { ...COMMON, all: { kind: 'bool', short: 'a' } });
  if (flags.help) {
    io.stdout.write(HISTORY_RM_USAGE);
    return 0;
  }
  if (!flags.all && args.length === 0) throw new UsageError('"kiln history rm" requires at least 1 argument (or --all)', 'REF');
  if (flags.all && args.length > 0) throw new UsageError('"kiln history rm --all" accepts no arguments', 'REF');
  const conn = await connect(flags, io);
  const refs = flags.all ? (await conn.control.listHistory({}, { signal: io.signal })).records.filter((r) => r.status !== 'running').map((r) => r.ref) : args;
  if (refs.length === 0) return 0;
  const { deleted } = await conn.control.deleteHistory({ refs }, { signal: io.signal });
  for (const ref of deleted) io.stdout.write(`${ref}\n`);
  return 0;
}

/** `kiln history export [REF...] [--all] [-o FILE]`: the records into a bundle (see history/history-bundle.ts). */
export async function runHistoryExport(argv: readonly string[], io: CliIo): Promise<number> {
  const { flags, args } = parseFlags(argv, { ...COMMON, all: { kind: 'bool', short: 'a' }, output: { kind: 'string', short: 'o' } });
  if (flags.help) {
    io.stdout.write(HISTORY_EXPORT_USAGE);
    return 0;
  }
  if (flags.all && args.length > 0) throw new UsageError('"kiln history export --all" accepts no arguments', 'REF');
  if (flags.output === '') throw new UsageError('flag needs a non-empty argument: --output', '--output');
  const toStdout = flags.output === undefined || flags.output === '-';
  if (toStdout && io.stdout.isTTY) throw new UsageError('refusing to write the bundle to the terminal: use -o FILE or redirect stdout', '--output');
  const conn = await connect(flags, io);
  const entries: control.HistoryBundleEntry[] = [];
  for await (const { entry } of conn.control.exportHistory({ refs: args, all: flags.all }, { signal: io.signal })) if (entry) entries.push(entry);
  const bundle = encodeHistoryBundle(entries);
  if (toStdout) {
    await new Promise<void>((resolve, reject) => io.stdout.write(bundle, (err) => (err ? reject(err) : resolve())));
  } else {
    writeFileAtomic(resolve(io.cwd, flags.output!), bundle);
    io.stderr.write(`exported ${entries.length} build record${entries.length === 1 ? '' : 's'} to ${flags.output}\n`);
  }
  return 0;
}

/**
 * `kiln history import [-f FILE|-]...`: every bundle is read and checked
 * whole before the first record is sent, so a bad bundle imports nothing.
 */
export async function runHistoryImport(argv: readonly string[], io: CliIo): Promise<number> {
  const { flags, args } = parseFlags(argv, { ...COMMON, file: { kind: 'list', short: 'f' } });
  if (flags.help) {
    io.stdout.write(HISTORY_IMPORT_USAGE);
    return 0;
  }
  if (args.some((a) => a !== '-')) throw new UsageError(`"kiln history import" takes its bundles with -f FILE (or "-" for stdin), got "${args.find((a) => a !== '-')}"`, 'ARGS');
  const files = [...flags.file, ...args];
  if (files.length === 0) files.push('-');
  if (files.filter((f) => f === '-').length > 1) throw new UsageError('stdin ("-") can be read only once', '--file');
  const bundles: { file: string; entries: control.HistoryBundleEntry[] }[] = [];
  for (const file of files) {
    if (file === '') throw new UsageError('flag needs a non-empty argument: --file', '--file');
    if (file === '-' && io.stdin instanceof Object && (io.stdin as { isTTY?: boolean }).isTTY) throw new UsageError('refusing to read a bundle from the terminal: use -f FILE or pipe it in', '--file');
    const source = file === '-' ? io.stdin : openBundle(resolve(io.cwd, file), file);
    bundles.push({ file, entries: await decodeHistoryBundle(source, file === '-' ? 'stdin' : file) });
  }
  const conn = await connect(flags, io);
  for (const { file, entries } of bundles) {
    for (const entry of entries) {
      const ref = entry.record?.ref ?? '';
      try {
        const res = await conn.control.importHistory({ entry }, { signal: io.signal });
        io.stdout.write(res.alreadyPresent ? `${res.ref} (already in the history)\n` : `${res.ref}\n`);
      } catch (err) {
        throw new KilnError(asKilnError(err).code, `failed to import ${file === '-' ? 'stdin' : file}: entry "builds/${ref}/": ${asKilnError(err).message}`, { field: '--file' }, { cause: err });
      }
    }
  }
  return 0;
}

/** `kiln history open [REF]`: the build's page on the daemon's dashboard. */
export async function runHistoryOpen(argv: readonly string[], io: CliIo): Promise<number> {
  const { flags, args } = parseFlags(argv, { ...COMMON, browser: { kind: 'bool' } });
  if (flags.help) {
    io.stdout.write(HISTORY_OPEN_USAGE);
    return 0;
  }
  const ref = oneRef(args, 'open');
  const conn = await connect(flags, io);
  const { url } = await conn.control.openHistory({ ref }, { signal: io.signal });
  io.stdout.write(`${url}\n`);
  if (flags.browser) {
    // The URL carries the dashboard's token: it goes to the browser as an argument, never through a shell.
    const child = spawn('xdg-open', [url], { stdio: 'ignore', detached: true });
    child.on('error', (err) => io.stderr.write(`kiln: could not start xdg-open (${err.message}): open the URL above yourself\n`));
    child.unref();
  }
  return 0;
}

function openBundle(path: string, shown: string): AsyncIterable<Uint8Array> {
  if (!existsSync(path)) throw new UsageError(`history bundle ${shown} not found`, '--file');
  if (!statSync(path).isFile()) throw new UsageError(`history bundle ${shown} is not a regular file`, '--file');
  return createReadStream(path);
}

function writeFileAtomic(path: string, data: Buffer): void {
  const tmp = `${path}.kiln-${process.pid}.tmp`;
  try {
    writeFileSync(tmp, data, { mode: 0o600 });
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw new KilnError('invalid_argument', `failed to write the bundle to ${path}: ${(err as Error).message}`, { field: '--output' }, { cause: err });
  }
}
