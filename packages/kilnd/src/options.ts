import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { parse as parseYaml } from 'yaml';
import { InvalidArgumentError, parseAddress, type Address } from '@kiln/common';

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
  /** NATS server URL(s), required for tier != all. */
  nats?: string;
  /** This process's id in the cluster directory. */
  id: string;
  maxParallelism: number;
  /** Registry access for image pulls: hosts reached over plain HTTP, and pull mirrors per host. */
  registry: { insecure: string[]; mirrors: Record<string, string[]> };
  /** The worker backend of the all-in-one daemon. */
  worker: 'oci' | 'containerd';
  logLevel?: string;
}

interface ConfigFile {
  root?: string;
  addr?: string;
  listen?: string;
  advertise?: string;
  nats?: string;
  tier?: string;
  id?: string;
  'max-parallelism'?: number;
  worker?: string;
  /** `[registry]` table: `insecure = ["host:port"]`, `[registry.mirrors]` `"docker.io" = ["mirror:5000"]`. */
  registry?: { insecure?: unknown; mirrors?: unknown };
  'log-level'?: string;
}

export const DAEMON_USAGE = 'kiln daemon [--tier NAME] [--config FILE] [--root DIR] [--addr unix:///PATH|tcp://HOST:PORT] [--listen tcp://HOST:PORT] [--advertise tcp://HOST:PORT] [--nats nats://HOST:PORT] [--id ID] [--max-parallelism N] [--worker oci|containerd]';

/**
 * Compiles `kiln daemon` flags (over a TOML or YAML config file, flags win)
 * into fully defaulted options. Throws InvalidArgumentError naming the flag.
 */
export function compileDaemonOptions(argv: string[], env: NodeJS.ProcessEnv = process.env): DaemonOptions {
  const flags = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
    if (!m) throw new InvalidArgumentError(`unexpected argument "${arg}"; usage: ${DAEMON_USAGE}`, arg);
    const name = m[1]!;
    if (!['tier', 'config', 'root', 'addr', 'listen', 'advertise', 'nats', 'id', 'max-parallelism', 'worker'].includes(name)) {
      throw new InvalidArgumentError(`unknown flag --${name}; usage: ${DAEMON_USAGE}`, `--${name}`);
    }
    const value = m[2] ?? argv[++i];
    if (value === undefined) throw new InvalidArgumentError(`flag --${name} needs a value`, `--${name}`);
    flags.set(name, value);
  }
  const file = flags.has('config') ? readConfig(flags.get('config')!) : {};
  const pick = (k: keyof ConfigFile & string): string | undefined => flags.get(k) ?? (file[k] === undefined ? undefined : String(file[k]));
  const tier = (pick('tier') ?? 'all') as TierName;
  if (!TIERS.includes(tier)) throw new InvalidArgumentError(`unknown tier "${tier}" (one of ${TIERS.join(', ')})`, '--tier');
  const root = pick('root') ?? env.KILN_ROOT ?? '/var/lib/kiln';
  const addr = parseAddress(pick('addr') ?? (env.KILN_ROOT ? `unix://${root}/kiln.sock` : 'unix:///run/kiln/kiln.sock'), '--addr');
  const listenRaw = pick('listen');
  const listen = listenRaw ? parseAddress(listenRaw, '--listen') : undefined;
  const nats = pick('nats');
  const advertise = pick('advertise');
  if (advertise) parseAddress(advertise, '--advertise');
  if (tier !== 'all') {
    if (!nats) throw new InvalidArgumentError(`--tier ${tier} needs --nats URL (tiers find each other over NATS)`, '--nats');
    if (!listen || listen.kind !== 'tcp') throw new InvalidArgumentError(`--tier ${tier} needs --listen tcp://HOST:PORT`, '--listen');
  }
  const mp = Number(pick('max-parallelism') ?? 4);
  if (!Number.isInteger(mp) || mp < 1) throw new InvalidArgumentError(`--max-parallelism must be a positive integer, got "${pick('max-parallelism')}"`, '--max-parallelism');
  const worker = pick('worker') ?? 'oci';
  if (worker !== 'oci' && worker !== 'containerd') throw new InvalidArgumentError(`--worker must be oci or containerd, got "${worker}"`, '--worker');
  const registry = compileRegistryConfig(file.registry);
  return { tier, root, addr, listen, advertise, nats, worker, registry, id: pick('id') ?? defaultId(root, tier), maxParallelism: mp, logLevel: file['log-level'] };
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
  return { insecure, mirrors };
}

/**
 * Stable across restarts on the same root (the solver cache names workers by
 * id), distinct for different roots and tiers on one host.
 */
function defaultId(root: string, tier: string): string {
  return `${hostname()}-${createHash('sha256').update(`${resolve(root)}\0${tier}`).digest('hex').slice(0, 8)}`;
}
