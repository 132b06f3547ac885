import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { parse as parseYaml } from 'yaml';
import type { NatsAuth, NatsTlsOptions } from '@kiln/bus';
import { InvalidArgumentError, parseAddress, parseByteSize, parseDuration, type Address, type TlsFiles } from '@kiln/common';
import { isOpKind, NETWORK_MODES, OP_KINDS, type NetworkOptions } from '@kiln/worker';
import { compileNatsOptions, NATS_FLAGS } from '@kiln/bus';

/** The tiers one process can run alone; `all` runs every tier in one process. */
export const TIERS = ['all', 'solver', 'frontend', 'content', 'worker-oci', 'worker-containerd', 'exporters'] as const;
export type TierName = (typeof TIERS)[number];

export interface DaemonOptions {
  tier: TierName;
  /** State directory (content, snapshots, metadata). */
  root: string;
  /** Where the CLI reaches the all-in-one daemon (tier=all). */
  addr: Address;
  /** Where a single tier serves Connect (tier != all). */
  listen?: Address;
  /** The URL other tiers use to reach this one (default: the bound --listen address). */
  advertise?: string;
  /** NATS server URL(s), required for tier != all; never with credentials in them. */
  nats?: string;
  /** Credentials for NATS (`--nats-user` + password file, token, NKEY seed or creds file), read from their files. */
  natsAuth?: NatsAuth;
  /** TLS towards NATS (`--nats-tlscacert`, `--nats-tlscert`, `--nats-tlskey`), PEM text. */
  natsTls?: NatsTlsOptions;
  /** This process's id in the cluster directory. */
  id: string;
  /** Ops the solver runs at once across all builds (default DEFAULT_MAX_PARALLELISM). */
  maxParallelism: number;
  /** Registry access for image pulls: hosts reached over plain HTTP, and pull mirrors per host. */
  registry: {
    insecure: string[];
    mirrors: Record<string, string[]>;
    /** `[registry] daemon-credentials = true`: the daemon's ~/.docker/config.json backs clients' pulls and pushes (default false: dangerous on a shared daemon). */
    daemonCredentials: boolean;
  };
  /** The worker backend of the all-in-one daemon. */
  worker: 'oci' | 'containerd';
  /** containerd's socket for the containerd worker (`--containerd-address`; default the worker's, /run/containerd/containerd.sock). */
  containerdAddress?: string;
  /** `[worker.network]`: how RUN steps reach the network (default mode "cni" on bridge kiln0). */
  network: NetworkOptions;
  /** Entitlements builds may ask for with `--allow` ("security.insecure", "network.host"); default none. */
  entitlements: ('security.insecure' | 'network.host')[];
  /** Exec ops a worker runs at once (default: --max-parallelism, not the core count: a sleeping or waiting step needs no CPU). */
  maxParallelExecs: number;
  /** Labels the worker advertises besides its own (`kiln.executor`, ...), for `--worker-filter labels.KEY==VALUE`. */
  workerLabels: Record<string, string>;
  /** Op kinds the worker refuses and does not announce (`--worker-disable-op exec`, `worker-disabled-ops = [...]`; @kiln/llb OP_KINDS). */
  workerDisabledOps: string[];
  /** How the solver places builds (`--placement`, `placement =`): "cache" (default: where the build's cache is, traded against load) or "load" (least busy worker). */
  placement: 'cache' | 'load';
  /** The content store's background GC policy; undefined when `[gc] enabled = false`. */
  gc?: GcPolicyOptions;
  /** `[events]`: retention of the build event stream (JetStream `KILN_EVENTS`, split solver); defaults 24 h, 1 GiB. */
  events?: { maxAgeMs?: number; maxBytes?: number };
  logLevel?: string;
  /** Mutual TLS on every TCP listener and client (`--tlscacert`, `--tlscert`, `--tlskey`). */
  tls?: TlsFiles;
  /** Serve plain TCP on a non-loopback address (`--insecure-tcp`); warned about at every start. */
  insecureTcp: boolean;
  /** `--dashboard 127.0.0.1:PORT`: the read-only web UI (all-in-one or solver tier), loopback only. */
  dashboard?: Address;
  /** `--group NAME|GID`: the group of the daemon's unix socket (mode 0660); default the daemon's own group. */
  socketGid?: number;
}

/** `[gc]`: how often the content tier collects garbage and what it keeps. */
export interface GcPolicyOptions {
  intervalMs: number;
  /** Unreferenced blobs are removed (least recently used first) only above this many bytes. */
  keepBytes?: number;
  /** Unreferenced blobs used within this window are kept. */
  keepDurationMs?: number;
}

/** Without a `[gc]` table: collect hourly, keep what was used in the last two days. */
/**
 * Default bound on ops running at once. BuildKit does not bound them by
 * default; this cap only stops a runaway graph from starting thousands of
 * processes. Independent steps (e.g. four stages that sleep or wait on the
 * network) must run together, so it is not the core count.
 */
export const DEFAULT_MAX_PARALLELISM = 64;

export const DEFAULT_GC_POLICY: GcPolicyOptions = { intervalMs: 3_600_000, keepDurationMs: 48 * 3_600_000 };

interface ConfigFile {
  root?: string;
  addr?: string;
  /** Group (name or gid) owning the unix socket. */
  group?: string | number;
  listen?: string;
  advertise?: string;
  /** A URL, or a `[nats]` table: `url`, `user`, `password-file`, `token-file`, `nkey-seed-file`, `creds`, `tlscacert`, `tlscert`, `tlskey`. */
  nats?: unknown;
  tier?: string;
  id?: string;
  'max-parallelism'?: number;
  /** The backend name, or a `[worker]` table: `backend`, `[worker.network]` (`mode`, `bridge`, `subnet`, `cni-plugin-dir`, `resolv-conf`, `pool-size`). */
  worker?: string | { backend?: unknown; network?: Record<string, unknown> };
  'containerd-address'?: string;
  /** `entitlements = ["network.host", "security.insecure"]`. */
  entitlements?: unknown;
  'max-parallel-execs'?: number;
  /** `worker-labels = { pool = "gpu" }`. */
  'worker-labels'?: unknown;
  /** `worker-disabled-ops = ["exec", "source:git"]`. */
  'worker-disabled-ops'?: unknown;
  /** `placement = "cache"` or `"load"`. */
  placement?: string;
  /** `[registry]` table: `insecure = ["host:port"]`, `[registry.mirrors]` `"docker.io" = ["mirror:5000"]`. */
  registry?: { insecure?: unknown; mirrors?: unknown; 'daemon-credentials'?: unknown };
  /** `[gc]` table: `enabled = true`, `interval = "1h"`, `keep-storage = "10GB"`, `keep-duration = "48h"`. */
  gc?: { enabled?: unknown; interval?: unknown; 'keep-storage'?: unknown; 'keep-duration'?: unknown };
  /** `[events]` table: `max-age = "24h"`, `max-bytes = "1GiB"` (the build event stream's limits). */
  events?: { 'max-age'?: unknown; 'max-bytes'?: unknown };
  'log-level'?: string;
  tlscacert?: string;
  tlscert?: string;
  tlskey?: string;
  'insecure-tcp'?: boolean;
  /** `dashboard = "127.0.0.1:PORT"`. */
  dashboard?: string;
}

export const DAEMON_USAGE = 'kiln daemon [--tier NAME] [--config FILE] [--root DIR] [--addr unix:///PATH|tcp://HOST:PORT] [--listen tcp://HOST:PORT] [--advertise tcp://HOST:PORT] [--nats nats://HOST:PORT] [--nats-user NAME --nats-password-file FILE | --nats-token-file FILE | --nats-nkey-seed-file FILE | --nats-creds FILE] [--nats-tlscacert FILE] [--nats-tlscert FILE --nats-tlskey FILE] [--id ID] [--max-parallelism N] [--max-parallel-execs N] [--allow-insecure-entitlement NAME[,NAME]] [--worker oci|containerd] [--containerd-address PATH] [--worker-label KEY=VALUE]... [--worker-disable-op KIND]... [--placement cache|load] [--network-mode cni|host|none] [--network-bridge NAME] [--network-subnet CIDR] [--tlscacert FILE --tlscert FILE --tlskey FILE] [--insecure-tcp] [--group NAME|GID] [--dashboard 127.0.0.1:PORT]';

/**
 * Compiles `kiln daemon` flags (over a TOML or YAML config file, flags win)
 * into fully defaulted options. Throws InvalidArgumentError naming the flag.
 */
export function compileDaemonOptions(argv: string[], env: NodeJS.ProcessEnv = process.env): DaemonOptions {
  const flags = new Map<string, string>();
  const labelFlags: string[] = [];
  const disabledOpFlags: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
    if (!m) throw new InvalidArgumentError(`unexpected argument "${arg}"; usage: ${DAEMON_USAGE}`, arg);
    const name = m[1]!;
    if (name === 'insecure-tcp') {
      if (m[2] !== undefined && m[2] !== 'true' && m[2] !== 'false') throw new InvalidArgumentError(`--insecure-tcp takes no value (or =true/=false), got "${m[2]}"`, '--insecure-tcp');
      flags.set(name, m[2] ?? 'true');
      continue;
    }
    if (!['tier', 'config', 'root', 'addr', 'listen', 'advertise', 'nats', 'id', 'max-parallelism', 'worker', 'containerd-address', 'max-parallel-execs', 'allow-insecure-entitlement', 'worker-label', 'worker-disable-op', 'placement', 'tlscacert', 'tlscert', 'tlskey', 'group', 'dashboard', ...NETWORK_FLAGS, ...NATS_FLAGS].includes(name)) {
      throw new InvalidArgumentError(`unknown flag --${name}; usage: ${DAEMON_USAGE}`, `--${name}`);
    }
    const value = m[2] ?? argv[++i];
    if (value === undefined) throw new InvalidArgumentError(`flag --${name} needs a value`, `--${name}`);
    if (name === 'worker-label') labelFlags.push(value);
    else if (name === 'worker-disable-op') disabledOpFlags.push(...value.split(',').map((k) => k.trim()).filter(Boolean));
    else flags.set(name, value);
  }
  const file = flags.has('config') ? readConfig(flags.get('config')!) : {};
  const workerTable = typeof file.worker === 'object' && file.worker !== null ? file.worker : undefined;
  if (workerTable) file.worker = workerTable.backend === undefined ? undefined : String(workerTable.backend);
  const pick = (k: keyof ConfigFile & string): string | undefined => flags.get(k) ?? (file[k] === undefined ? undefined : String(file[k]));
  const tier = (pick('tier') ?? 'all') as TierName;
  if (!TIERS.includes(tier)) throw new InvalidArgumentError(`unknown tier "${tier}" (one of ${TIERS.join(', ')})`, '--tier');
  const root = pick('root') ?? env.KILN_ROOT ?? '/var/lib/kiln';
  const addr = parseAddress(pick('addr') ?? (env.KILN_ROOT ? `unix://${root}/kiln.sock` : 'unix:///run/kiln/kiln.sock'), '--addr');
  const listenRaw = pick('listen');
  const listen = listenRaw ? parseAddress(listenRaw, '--listen') : undefined;
  const natsConnect = compileNatsOptions(flags, file.nats, env);
  const nats = natsConnect?.url;
  const advertise = pick('advertise');
  if (advertise) parseAddress(advertise, '--advertise');
  if (tier !== 'all') {
    if (!nats) throw new InvalidArgumentError(`--tier ${tier} needs --nats URL (tiers find each other over NATS)`, '--nats');
    if (!listen || listen.kind !== 'tcp') throw new InvalidArgumentError(`--tier ${tier} needs --listen tcp://HOST:PORT`, '--listen');
  }
  const mp = Number(pick('max-parallelism') ?? DEFAULT_MAX_PARALLELISM);
  if (!Number.isInteger(mp) || mp < 1) throw new InvalidArgumentError(`--max-parallelism must be a positive integer, got "${pick('max-parallelism')}"`, '--max-parallelism');
  const worker = pick('worker') ?? 'oci';
  if (worker !== 'oci' && worker !== 'containerd') throw new InvalidArgumentError(`--worker must be oci or containerd, got "${worker}"`, '--worker');
  const registry = compileRegistryConfig(file.registry);
  const gc = compileGcConfig(file.gc);
  const eventLimits = compileEventsConfig(file.events);
  const entitlements = compileEntitlements(flags.get('allow-insecure-entitlement'), file.entitlements);
  const mpeRaw = pick('max-parallel-execs');
  const maxParallelExecs = mpeRaw === undefined ? mp : Number(mpeRaw);
  if (!Number.isInteger(maxParallelExecs) || maxParallelExecs < 1) {
    throw new InvalidArgumentError(`--max-parallel-execs must be a positive integer, got "${mpeRaw}"`, '--max-parallel-execs');
  }
  const dashboard = compileDashboardAddress(pick('dashboard'), tier);
  const placement = pick('placement') ?? 'cache';
  if (placement !== 'cache' && placement !== 'load') throw new InvalidArgumentError(`--placement must be cache or load, got "${placement}"`, flags.has('placement') ? '--placement' : 'placement');
  const groupRaw = pick('group');
  const socketGid = groupRaw === undefined ? undefined : resolveGroup(groupRaw);
  return {
    tier,
    root,
    addr,
    ...(socketGid !== undefined ? { socketGid } : {}),
    ...(dashboard ? { dashboard } : {}),
    listen,
    advertise,
    nats,
    ...(natsConnect?.auth ? { natsAuth: natsConnect.auth } : {}),
    ...(natsConnect?.tls ? { natsTls: natsConnect.tls } : {}),
    worker,
    ...(pick('containerd-address') ? { containerdAddress: pick('containerd-address')!.replace(/^unix:\/\//, '') } : {}),
    network: compileNetworkConfig(flags, workerTable?.network),
    registry,
    gc,
    events: eventLimits,
    entitlements,
    maxParallelExecs,
    workerLabels: compileWorkerLabels(labelFlags, file['worker-labels']),
    workerDisabledOps: compileDisabledOps(disabledOpFlags, file['worker-disabled-ops']),
    placement,
    id: pick('id') ?? defaultId(root, tier),
    maxParallelism: mp,
    logLevel: file['log-level'],
    tls: compileTlsFiles(pick('tlscacert'), pick('tlscert'), pick('tlskey')),
    insecureTcp: compileInsecureTcp(flags.get('insecure-tcp'), file['insecure-tcp']),
  };
}

/** `--dashboard [tcp://|http://]HOST:PORT`: served by the process that runs the solver, on loopback only (its access is a token, not mTLS). */
function compileDashboardAddress(raw: string | undefined, tier: TierName): Address | undefined {
  if (raw === undefined) return undefined;
  if (tier !== 'all' && tier !== 'solver') throw new InvalidArgumentError(`--dashboard is served by the solver: give it to the all-in-one daemon or --tier solver, not --tier ${tier}`, '--dashboard');
  const addr = parseAddress(/^[a-z]+:\/\//.test(raw) ? raw : `tcp://${raw}`, '--dashboard');
  if (addr.kind !== 'tcp' || !(addr.host === '::1' || /^127\./.test(addr.host))) {
    throw new InvalidArgumentError(`--dashboard must be a loopback address like 127.0.0.1:PORT, got "${raw}": it is guarded by a token, not by mTLS, so it never listens beyond this host`, '--dashboard');
  }
  return addr;
}

const NETWORK_FLAGS = ['network-mode', 'network-bridge', 'network-subnet'];

/** `--network-*` flags over `[worker.network]`; the worker checks bridge, subnet and plugins when it starts. */
function compileNetworkConfig(flags: Map<string, string>, raw: unknown): NetworkOptions {
  if (raw !== undefined && (typeof raw !== 'object' || raw === null || Array.isArray(raw))) throw new InvalidArgumentError('worker.network must be a table', 'worker.network');
  const table = (raw ?? {}) as Record<string, unknown>;
  for (const k of Object.keys(table)) {
    if (!['mode', 'bridge', 'subnet', 'cni-plugin-dir', 'resolv-conf', 'pool-size'].includes(k)) throw new InvalidArgumentError(`unknown key worker.network.${k} (mode, bridge, subnet, cni-plugin-dir, resolv-conf, pool-size)`, `worker.network.${k}`);
    if (k === 'pool-size') {
      if (!Number.isInteger(table[k]) || (table[k] as number) < 0) throw new InvalidArgumentError('worker.network.pool-size must be a whole number (0: no pool)', 'worker.network.pool-size');
      continue;
    }
    if (typeof table[k] !== 'string') throw new InvalidArgumentError(`worker.network.${k} must be a string`, `worker.network.${k}`);
  }
  const mode = flags.get('network-mode') ?? (table.mode as string | undefined) ?? 'cni';
  if (!NETWORK_MODES.includes(mode as never)) {
    throw new InvalidArgumentError(`unknown network mode "${mode}" (one of ${NETWORK_MODES.join(', ')})`, flags.has('network-mode') ? '--network-mode' : 'worker.network.mode');
  }
  const bridge = flags.get('network-bridge') ?? (table.bridge as string | undefined);
  const subnet = flags.get('network-subnet') ?? (table.subnet as string | undefined);
  const cniPluginDir = table['cni-plugin-dir'] as string | undefined;
  const resolvConf = table['resolv-conf'] as string | undefined;
  const poolSize = table['pool-size'] as number | undefined;
  return {
    mode: mode as NetworkOptions['mode'],
    ...(bridge !== undefined ? { bridge } : {}),
    ...(subnet !== undefined ? { subnet } : {}),
    ...(cniPluginDir !== undefined ? { cniPluginDir } : {}),
    ...(resolvConf !== undefined ? { resolvConf: resolve(resolvConf) } : {}),
    ...(poolSize !== undefined ? { poolSize } : {}),
  };
}

/** All three TLS files, or none (plain TCP, only on loopback unless --insecure-tcp). */
function compileTlsFiles(caCert: string | undefined, cert: string | undefined, key: string | undefined): TlsFiles | undefined {
  if (caCert === undefined && cert === undefined && key === undefined) return undefined;
  const missing = [['--tlscacert', caCert], ['--tlscert', cert], ['--tlskey', key]].find(([, v]) => !v);
  if (missing) throw new InvalidArgumentError(`${missing[0]} is missing: mutual TLS needs --tlscacert, --tlscert and --tlskey together`, missing[0]);
  return { caCert: caCert!, cert: cert!, key: key! };
}

function compileInsecureTcp(flag: string | undefined, raw: unknown): boolean {
  if (flag !== undefined) return flag === 'true';
  if (raw === undefined) return false;
  if (typeof raw !== 'boolean') throw new InvalidArgumentError('insecure-tcp must be true or false', 'insecure-tcp');
  return raw;
}

/** `--worker-label KEY=VALUE` flags (repeatable) over the config file's `worker-labels` table. */
function compileWorkerLabels(flags: readonly string[], raw: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (raw !== undefined) {
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new InvalidArgumentError('worker-labels must be a table of KEY = "VALUE"', 'worker-labels');
    for (const [k, v] of Object.entries(raw)) {
      if (typeof v !== 'string') throw new InvalidArgumentError(`worker-labels.${k} must be a string`, `worker-labels.${k}`);
      out[k] = v;
    }
  }
  for (const f of flags) {
    const eq = f.indexOf('=');
    if (eq <= 0) throw new InvalidArgumentError(`invalid --worker-label "${f}": want KEY=VALUE`, '--worker-label');
    out[f.slice(0, eq)] = f.slice(eq + 1);
  }
  for (const k of Object.keys(out)) {
    if (k.startsWith('kiln.')) throw new InvalidArgumentError(`worker label "${k}" is reserved: kiln.* labels are set by the worker itself`, '--worker-label');
  }
  return out;
}

/** `--worker-disable-op` flags (repeatable, comma-separated) over the config file's `worker-disabled-ops` list; kinds checked against OP_KINDS. */
function compileDisabledOps(flags: readonly string[], raw: unknown): string[] {
  const field = flags.length > 0 ? '--worker-disable-op' : 'worker-disabled-ops';
  let list: readonly unknown[] = flags;
  if (flags.length === 0 && raw !== undefined) {
    if (!Array.isArray(raw)) throw new InvalidArgumentError('worker-disabled-ops must be a list of op kinds', field);
    list = raw;
  }
  for (const k of list) {
    if (typeof k !== 'string' || !isOpKind(k)) throw new InvalidArgumentError(`unknown op kind "${String(k)}" in ${field} (one of ${OP_KINDS.join(', ')})`, field);
  }
  return [...new Set(list as string[])];
}

const ENTITLEMENTS = ['security.insecure', 'network.host'] as const;

/** The flag (comma-separated) wins over the config file's `entitlements` list. */
function compileEntitlements(flag: string | undefined, raw: unknown): DaemonOptions['entitlements'] {
  const field = flag !== undefined ? '--allow-insecure-entitlement' : 'entitlements';
  let list: unknown[];
  if (flag !== undefined) list = flag.split(',').filter((e) => e !== '');
  else if (raw === undefined) list = [];
  else if (Array.isArray(raw)) list = raw;
  else throw new InvalidArgumentError('entitlements must be a list of entitlement names', field);
  const out: DaemonOptions['entitlements'] = [];
  for (const e of list) {
    if (!ENTITLEMENTS.includes(e as never)) throw new InvalidArgumentError(`unknown entitlement "${String(e)}" (one of ${ENTITLEMENTS.join(', ')})`, field);
    if (!out.includes(e as never)) out.push(e as DaemonOptions['entitlements'][number]);
  }
  return out;
}

function readConfig(path: string): ConfigFile {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new InvalidArgumentError(`cannot read config file ${path}: ${(err as Error).message}`, '--config');
  }
  try {
    const parsed: unknown = /\.ya?ml$/i.test(path) ? parseYaml(text) : parseToml(text);
    if (!parsed || typeof parsed !== 'object') throw new Error('not a table');
    return parsed as ConfigFile;
  } catch (err) {
    throw new InvalidArgumentError(`config file ${path} is invalid: ${(err as Error).message}`, '--config');
  }
}

function compileRegistryConfig(raw: ConfigFile['registry']): DaemonOptions['registry'] {
  const strings = (v: unknown, field: string): string[] => {
    if (v === undefined) return [];
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw new InvalidArgumentError(`${field} must be a list of "host[:port]" strings`, field);
    return v as string[];
  };
  const insecure = strings(raw?.insecure, 'registry.insecure');
  const mirrors: Record<string, string[]> = {};
  if (raw?.mirrors !== undefined) {
    if (typeof raw.mirrors !== 'object' || raw.mirrors === null) throw new InvalidArgumentError('registry.mirrors must be a table of host = ["mirror", ...]', 'registry.mirrors');
    for (const [host, list] of Object.entries(raw.mirrors)) mirrors[host] = strings(list, `registry.mirrors."${host}"`);
  }
  const daemonCredentials = raw?.['daemon-credentials'] ?? false;
  if (typeof daemonCredentials !== 'boolean') throw new InvalidArgumentError('registry.daemon-credentials must be true or false', 'registry.daemon-credentials');
  return { insecure, mirrors, daemonCredentials };
}

/**
 * Stable across restarts on the same root (the solver cache names workers by
 * id), distinct for different roots and tiers on one host.
 */
function defaultId(root: string, tier: string): string {
  return `${hostname()}-${createHash('sha256').update(`${resolve(root)}\0${tier}`).digest('hex').slice(0, 8)}`;
}

/** `[events]`: the build event stream's max age (at least 1s) and max bytes (at least 1 MiB). */
function compileEventsConfig(raw: ConfigFile['events']): { maxAgeMs?: number; maxBytes?: number } {
  if (raw === undefined) return {};
  if (typeof raw !== 'object' || raw === null) throw new InvalidArgumentError('events must be a table', 'events');
  for (const key of Object.keys(raw)) {
    if (!['max-age', 'max-bytes'].includes(key)) throw new InvalidArgumentError(`unknown key events.${key} (one of max-age, max-bytes)`, `events.${key}`);
  }
  const out: { maxAgeMs?: number; maxBytes?: number } = {};
  const age = raw['max-age'];
  if (age !== undefined) {
    if (typeof age !== 'string' && typeof age !== 'number') throw new InvalidArgumentError('events.max-age must be a duration like "24h"', 'events.max-age');
    out.maxAgeMs = parseDuration(String(age), 'events.max-age');
    if (out.maxAgeMs < 1000) throw new InvalidArgumentError(`events.max-age must be at least 1s, got "${age}"`, 'events.max-age');
  }
  const bytes = raw['max-bytes'];
  if (bytes !== undefined) {
    if (typeof bytes !== 'string' && typeof bytes !== 'number') throw new InvalidArgumentError('events.max-bytes must be a size like "1GiB"', 'events.max-bytes');
    out.maxBytes = parseByteSize(String(bytes), 'events.max-bytes');
    if (out.maxBytes < 1024 * 1024) throw new InvalidArgumentError(`events.max-bytes must be at least 1MiB, got "${bytes}"`, 'events.max-bytes');
  }
  return out;
}

function compileGcConfig(raw: ConfigFile['gc']): GcPolicyOptions | undefined {
  if (raw === undefined) return { ...DEFAULT_GC_POLICY };
  if (typeof raw !== 'object' || raw === null) throw new InvalidArgumentError('gc must be a table', 'gc');
  for (const key of Object.keys(raw)) {
    if (!['enabled', 'interval', 'keep-storage', 'keep-duration'].includes(key)) {
      throw new InvalidArgumentError(`unknown key gc.${key} (one of enabled, interval, keep-storage, keep-duration)`, `gc.${key}`);
    }
  }
  if (raw.enabled !== undefined && typeof raw.enabled !== 'boolean') throw new InvalidArgumentError('gc.enabled must be true or false', 'gc.enabled');
  if (raw.enabled === false) return undefined;
  const text = (v: unknown, field: string): string | undefined => {
    if (v === undefined) return undefined;
    if (typeof v !== 'string' && typeof v !== 'number') throw new InvalidArgumentError(`${field} must be a string like "10GB" or "48h"`, field);
    return String(v);
  };
  const interval = text(raw.interval, 'gc.interval');
  const keepStorage = text(raw['keep-storage'], 'gc.keep-storage');
  const keepDuration = text(raw['keep-duration'], 'gc.keep-duration');
  const intervalMs = interval === undefined ? DEFAULT_GC_POLICY.intervalMs : parseDuration(interval, 'gc.interval');
  if (intervalMs < 1000) throw new InvalidArgumentError(`gc.interval must be at least 1s, got "${interval}"`, 'gc.interval');
  const policy: GcPolicyOptions = { intervalMs };
  if (keepStorage !== undefined) policy.keepBytes = parseByteSize(keepStorage, 'gc.keep-storage');
  if (keepDuration !== undefined) policy.keepDurationMs = parseDuration(keepDuration, 'gc.keep-duration');
  if (policy.keepBytes === undefined && policy.keepDurationMs === undefined) policy.keepDurationMs = DEFAULT_GC_POLICY.keepDurationMs;
  return policy;
}

/** `--group`: a gid, or a group name looked up in /etc/group (as buildkitd's `--group`). */
function resolveGroup(value: string): number {
  if (/^\d+$/.test(value)) return Number(value);
  let text = '';
  try {
    text = readFileSync('/etc/group', 'utf8');
  } catch {
    // no group file: the name cannot be resolved
  }
  for (const line of text.split('\n')) {
    const [name, , gid] = line.split(':');
    if (name === value && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
  }
  throw new InvalidArgumentError(`--group: no group named "${value}" in /etc/group`, '--group');
}
