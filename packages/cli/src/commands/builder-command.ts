import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { control, llb } from '@kiln/api';
import { asKilnError, describeError, KilnError, parseAddress, sleep } from '@kiln/common';
import { BuilderStore, BUILDER_NAME, DEFAULT_BUILDER, type Builder } from '../builders/builder-store.js';
import type { CliIo } from '../cli-io.js';
import { builderAddress, connectDaemon, DEFAULT_ROOT, resolveDaemonAddress, type DaemonAddress } from '../daemon.js';
import { parseFlags } from '../flags/flag-parser.js';
import { UsageError } from '../flags/usage-error.js';
import { formatTable } from '../progress/format.js';

export const BUILDER_USAGE = `Usage:  kiln builder COMMAND

Manage builder instances (stored in ~/.kiln/builders, or $KILN_CONFIG/builders)

Commands:
  create      Create a new builder instance
  inspect     Inspect current builder instance
  ls          List builder instances
  rm          Remove one or more builder instances
  stop        Stop builder instance
  use         Set the current builder instance

Run 'kiln builder COMMAND --help' for more information on a command.
`;

const CREATE_USAGE = `Usage:  kiln builder create [OPTIONS] [ENDPOINT]

Create a new builder instance

  local:   the all-in-one daemon on this machine, started on first use (ENDPOINT default unix://ROOT/kiln.sock)
  remote:  a daemon at ENDPOINT (tcp://HOST:PORT or unix:///PATH), over mutual TLS with cacert/cert/key

Options:
      --bootstrap                Boot builder after creation
      --driver string            Driver to use (local, remote) (default "local")
      --driver-opt stringArray   Options for the driver (local: root=DIR; remote: cacert=FILE,cert=FILE,key=FILE)
  -h, --help                     Print usage
      --name string              Builder instance name
      --use                      Set the current builder instance
`;

const USE_USAGE = `Usage:  kiln builder use [OPTIONS] NAME

Set the current builder instance ("default": KILN_ADDR or the local default daemon)

Options:
  -h, --help   Print usage
`;

const LS_USAGE = `Usage:  kiln builder ls [OPTIONS]

List builder instances

Options:
      --format string   Format the output ("table", "json") (default "table")
  -h, --help            Print usage
`;

const INSPECT_USAGE = `Usage:  kiln builder inspect [OPTIONS] [NAME]

Inspect current builder instance

Options:
      --bootstrap   Ensure builder has booted before inspecting
  -h, --help        Print usage
`;

const RM_USAGE = `Usage:  kiln builder rm [OPTIONS] [NAME...]

Remove one or more builder instances

Options:
  -f, --force   Do not prompt for confirmation (kiln never prompts)
  -h, --help    Print usage
`;

const STOP_USAGE = `Usage:  kiln builder stop [OPTIONS] [NAME]

Stop builder instance (a local builder's daemon gets SIGTERM; a remote one is left running)

Options:
  -h, --help   Print usage
`;

export const BUILDER_SUB_USAGES: Readonly<Record<string, string>> = {
  create: CREATE_USAGE,
  inspect: INSPECT_USAGE,
  ls: LS_USAGE,
  rm: RM_USAGE,
  stop: STOP_USAGE,
  use: USE_USAGE,
};

const HELP = { help: { kind: 'bool', short: 'h' } } as const;

/** `kiln builder create|use|ls|inspect|rm|stop`. */
export async function runBuilder(argv: readonly string[], io: CliIo): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h') {
    (sub === undefined ? io.stderr : io.stdout).write(BUILDER_USAGE);
    return sub === undefined ? 2 : 0;
  }
  const run = { create, use, ls, inspect, rm, stop }[sub];
  if (!run) throw new UsageError(`unknown command "${sub}" for "kiln builder"`, 'COMMAND');
  if (rest.includes('--help') || rest.includes('-h')) {
    io.stdout.write(BUILDER_SUB_USAGES[sub]!);
    return 0;
  }
  return run(rest, io);
}

async function create(argv: readonly string[], io: CliIo): Promise<number> {
  const { flags, args } = parseFlags(argv, { ...HELP, name: { kind: 'string' }, driver: { kind: 'string' }, 'driver-opt': { kind: 'list' }, use: { kind: 'bool' }, bootstrap: { kind: 'bool' } });
  const store = new BuilderStore(io.vars);
  const driver = flags.driver ?? 'local';
  if (driver !== 'local' && driver !== 'remote') throw new UsageError(`failed to find driver "${driver}" (kiln has local and remote)`, '--driver');
  const name = flags.name ?? `builder-${randomBytes(4).toString('hex')}`;
  if (!BUILDER_NAME.test(name) || name === DEFAULT_BUILDER) throw new UsageError(`invalid builder name "${name}"`, '--name');
  if (store.exists(name)) throw new KilnError('already_exists', `existing instance for "${name}"; remove it first (kiln builder rm ${name})`, { builder: name });
  if (args.length > 1) throw new UsageError(`"kiln builder create" accepts at most 1 ENDPOINT, got ${args.length}`, 'ENDPOINT');

  const opts: Record<string, string> = {};
  const allowed = driver === 'local' ? ['root'] : ['cacert', 'cert', 'key'];
  for (const o of flags['driver-opt'].flatMap((v) => v.split(','))) {
    const eq = o.indexOf('=');
    const k = o.slice(0, eq);
    if (eq <= 0 || !allowed.includes(k)) throw new UsageError(`invalid driver option "${o}" for the ${driver} driver (want ${allowed.map((a) => `${a}=`).join(', ')})`, '--driver-opt');
    const path = resolve(io.cwd, o.slice(eq + 1));
    if (k !== 'root' && !existsSync(path)) throw new UsageError(`--driver-opt ${k}: file "${o.slice(eq + 1)}" not found`, '--driver-opt');
    opts[k] = path;
  }
  if (driver === 'remote' && ['cacert', 'cert', 'key'].some((k) => opts[k]) && !['cacert', 'cert', 'key'].every((k) => opts[k])) {
    throw new UsageError('the remote driver needs all of cacert=, cert= and key= for mutual TLS (or none)', '--driver-opt');
  }
  let endpoint = args[0];
  if (driver === 'remote' && !endpoint) throw new UsageError('the remote driver needs an ENDPOINT (tcp://HOST:PORT or unix:///PATH)', 'ENDPOINT');
  endpoint ??= `unix://${join(opts.root ?? DEFAULT_ROOT, 'kiln.sock')}`;
  try {
    parseAddress(endpoint, 'ENDPOINT');
  } catch (err) {
    throw new UsageError(`invalid ENDPOINT "${endpoint}": want unix:///PATH or tcp://HOST:PORT`, 'ENDPOINT', { cause: err });
  }
  const b: Builder = { name, driver, endpoint, driverOpts: opts, createdAt: new Date().toISOString() };
  store.save(b);
  if (flags.use) store.setCurrent(name);
  if (flags.bootstrap) await probe(builderAddress(b), io, true);
  io.stdout.write(`${name}\n`);
  return 0;
}

async function use(argv: readonly string[], io: CliIo): Promise<number> {
  const { args } = parseFlags(argv, { ...HELP, default: { kind: 'bool' }, global: { kind: 'bool' } });
  if (args.length !== 1) throw new UsageError('"kiln builder use" requires exactly 1 argument (NAME)', 'NAME');
  const store = new BuilderStore(io.vars);
  const name = args[0]!;
  if (name !== DEFAULT_BUILDER) store.get(name);
  store.setCurrent(name);
  return 0;
}

interface Probed {
  status: 'running' | 'inactive';
  version?: string;
  platforms: string[];
  workers: control.WorkerRecord[];
  error?: string;
}

/** Asks the builder's daemon for Info and its workers; `start` lets a local builder's daemon be started. */
async function probe(where: DaemonAddress, io: CliIo, start: boolean): Promise<Probed> {
  try {
    const conn = await connectDaemon({
      address: where,
      env: io.vars,
      daemonCommand: start && !where.explicit ? io.daemonCommand : [],
      probeTimeoutMs: 2000,
      signal: io.signal,
    });
    const workers = (await conn.control.listWorkers({}, { signal: io.signal, timeoutMs: 5000 })).record;
    const platforms = [...new Set(workers.flatMap((w) => w.platforms.map(platformString)))];
    return { status: 'running', version: conn.info.version, platforms, workers };
  } catch (err) {
    return { status: 'inactive', platforms: [], workers: [], error: describeError(asKilnError(err)) };
  }
}

function platformString(p: llb.Platform): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}

/** Every builder: the implicit default first, then the stored ones by name. */
function allBuilders(io: CliIo): { name: string; driver: string; where: DaemonAddress }[] {
  const store = new BuilderStore(io.vars);
  const def = resolveDaemonAddress(undefined, { ...io.vars, KILN_BUILDER: undefined }, DEFAULT_BUILDER);
  return [{ name: DEFAULT_BUILDER, driver: def.explicit ? 'remote' : 'local', where: def }, ...store.list().map((b) => ({ name: b.name, driver: b.driver, where: builderAddress(b) }))];
}

async function ls(argv: readonly string[], io: CliIo): Promise<number> {
  const { flags, args } = parseFlags(argv, { ...HELP, format: { kind: 'string' } });
  if (args.length > 0) throw new UsageError(`"kiln builder ls" accepts no arguments, got "${args[0]}"`, 'ARGS');
  const format = flags.format ?? 'table';
  if (format !== 'table' && format !== 'json') throw new UsageError(`invalid argument "${format}" for "--format" flag: want table or json`, '--format');
  const current = new BuilderStore(io.vars).current() ?? DEFAULT_BUILDER;
  const rows = await Promise.all(
    allBuilders(io).map(async (b) => ({ ...b, current: b.name === current, probed: await probe(b.where, io, false) })),
  );
  if (format === 'json') {
    for (const r of rows) {
      io.stdout.write(`${JSON.stringify({ Name: r.name, Driver: r.driver, Current: r.current, Nodes: [{ Name: nodeName(r.name), Endpoint: r.where.addr, Status: r.probed.status, Version: r.probed.version ?? '', Platforms: r.probed.platforms }] })}\n`);
    }
    return 0;
  }
  const table = [['NAME/NODE', 'DRIVER/ENDPOINT', 'STATUS', 'BUILDKIT', 'PLATFORMS']];
  for (const r of rows) {
    table.push([`${r.name}${r.current ? ' *' : ''}`, r.driver, '', '', '']);
    table.push([` \\_ ${nodeName(r.name)}`, ` \\_ ${r.where.addr}`, r.probed.status, r.probed.version ?? '', r.probed.platforms.join(', ')]);
  }
  io.stdout.write(formatTable(table));
  return 0;
}

const nodeName = (builder: string) => (builder === DEFAULT_BUILDER ? builder : `${builder}0`);

async function inspect(argv: readonly string[], io: CliIo): Promise<number> {
  const { flags, args } = parseFlags(argv, { ...HELP, bootstrap: { kind: 'bool' } });
  if (args.length > 1) throw new UsageError('"kiln builder inspect" accepts at most 1 argument (NAME)', 'NAME');
  const store = new BuilderStore(io.vars);
  const name = args[0] || io.vars.KILN_BUILDER || store.current() || DEFAULT_BUILDER;
  const b = allBuilders(io).find((x) => x.name === name) ?? { name, driver: store.get(name).driver, where: builderAddress(store.get(name)) };
  const p = await probe(b.where, io, flags.bootstrap);
  const stored = name === DEFAULT_BUILDER ? undefined : store.get(name);
  let out = formatTable([
    ['Name:', name],
    ['Driver:', b.driver],
  ]);
  out += '\nNodes:\n';
  const rows = [
    ['Name:', nodeName(name)],
    ['Endpoint:', b.where.addr],
  ];
  for (const [k, v] of Object.entries(stored?.driverOpts ?? {})) rows.push(['Driver Options:', `${k}="${v}"`]);
  rows.push(['Status:', p.status]);
  if (p.version) rows.push(['BuildKit version:', `kiln ${p.version}`]);
  if (p.platforms.length > 0) rows.push(['Platforms:', p.platforms.join(', ')]);
  if (p.error && flags.bootstrap) rows.push(['Error:', p.error]);
  out += formatTable(rows);
  io.stdout.write(out);
  if (flags.bootstrap && p.status !== 'running') return 1;
  return 0;
}

async function rm(argv: readonly string[], io: CliIo): Promise<number> {
  const { args } = parseFlags(argv, { ...HELP, force: { kind: 'bool', short: 'f' }, 'keep-state': { kind: 'bool' } });
  const store = new BuilderStore(io.vars);
  const names = args.length > 0 ? args : [store.current() ?? DEFAULT_BUILDER];
  for (const name of names) {
    if (name === DEFAULT_BUILDER) throw new KilnError('failed_precondition', 'default builder cannot be removed', { builder: name });
    store.get(name);
  }
  for (const name of names) {
    store.remove(name);
    io.stderr.write(`${name} removed\n`);
  }
  return 0;
}

async function stop(argv: readonly string[], io: CliIo): Promise<number> {
  const { args } = parseFlags(argv, HELP);
  if (args.length > 1) throw new UsageError('"kiln builder stop" accepts at most 1 argument (NAME)', 'NAME');
  const store = new BuilderStore(io.vars);
  const name = args[0] || io.vars.KILN_BUILDER || store.current() || DEFAULT_BUILDER;
  const b = allBuilders(io).find((x) => x.name === name);
  if (!b) store.get(name); // throws not found
  if (!b || b.where.explicit) return 0; // a remote daemon is not ours to stop (buildx's remote driver does nothing either)
  const pidFile = join(b.where.root, 'kilnd.pid');
  let pid: number;
  try {
    pid = Number(readFileSync(pidFile, 'utf8').trim());
  } catch {
    return 0; // not running
  }
  if (!(pid > 1)) return 0;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return 0;
  }
  // Wait (up to 15 s) until it is gone, so a following start finds the socket free.
  for (let i = 0; i < 150; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return 0;
    }
    await sleep(100, io.signal);
  }
  throw new KilnError('deadline_exceeded', `builder "${name}" (pid ${pid}) did not stop within 15 s`, { builder: name });
}
