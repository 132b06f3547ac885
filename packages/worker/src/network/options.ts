import { existsSync } from 'node:fs';
import path from 'node:path';
import { InvalidArgumentError } from '@kiln/common';

/**
 * How RUN steps without `--network` reach the network (daemon config
 * `[worker.network] mode`):
 * - "cni": a network namespace per step, wired to a Kiln-owned bridge by the
 *   CNI plugins (bridge with a gateway and masquerade, host-local IPAM, loopback);
 * - "host": the host's namespace (BuildKit's fallback when CNI is not set up);
 * - "none": a namespace of its own with loopback only.
 */
export type NetworkMode = 'cni' | 'host' | 'none';
export const NETWORK_MODES: readonly NetworkMode[] = ['cni', 'host', 'none'];

export interface NetworkOptions {
  mode: NetworkMode;
  /** Bridge the steps' veths join (created by the bridge plugin). Default "kiln0". */
  bridge?: string;
  /** IPv4 subnet of the bridge, CIDR; its first address is the gateway. Default DEFAULT_SUBNET. */
  subnet?: string;
  /** Directory of the CNI plugin binaries. Default "/usr/lib/cni" (Debian's containernetworking-plugins). */
  cniPluginDir?: string;
  /**
   * The host resolv.conf a step's /etc/resolv.conf is made from. Default
   * /etc/resolv.conf (or systemd-resolved's upstream file when that only
   * names its stub resolver).
   */
  resolvConf?: string;
  /**
   * Wired namespaces kept ready for steps (mode "cni"; see NetnsPool).
   * Default DEFAULT_POOL_SIZE; 0 makes and removes one per step.
   */
  poolSize?: number;
  /**
   * Most wired namespaces kept ready after a burst of parallel steps (at
   * least poolSize). Default DEFAULT_POOL_KEEP.
   */
  poolKeep?: number;
  /**
   * How long the pool goes unused before the namespaces a burst left above
   * poolSize are dropped. Default DEFAULT_POOL_IDLE_MS.
   */
  poolIdleMs?: number;
  /**
   * Host-wide state every daemon on this host shares: the host-local IPAM
   * data (one allocation dir per bridge + subnet, so two daemons on one
   * bridge never hand out the same address) and a lock per bridge. Default
   * DEFAULT_HOST_STATE_DIR (tmpfs: allocations die with the namespaces at a reboot).
   */
  hostStateDir?: string;
}

export const DEFAULT_BRIDGE = 'kiln0';
/** Far from Docker's 172.17/16, Podman's 10.88/16 and BuildKit's 10.10/16. */
export const DEFAULT_SUBNET = '10.213.0.0/16';
export const DEFAULT_CNI_PLUGIN_DIR = '/usr/lib/cni';
export const DEFAULT_HOST_STATE_DIR = '/run/kiln-net';
/** Enough for a few parallel stages; a longer burst makes more, kept up to DEFAULT_POOL_KEEP until the pool idles. */
export const DEFAULT_POOL_SIZE = 4;
/** A burst's namespaces kept for the next one (each holds a veth and an address of the subnet). */
export const DEFAULT_POOL_KEEP = 32;
/** Surplus namespaces go after this long without a step. */
export const DEFAULT_POOL_IDLE_MS = 5 * 60_000;
/** Plugins mode "cni" runs. */
export const CNI_PLUGINS = ['bridge', 'host-local', 'loopback'] as const;

export interface CompiledNetworkOptions {
  mode: NetworkMode;
  bridge: string;
  subnet: string;
  /** The bridge's own address (the steps' default route). */
  gateway: string;
  cniPluginDir: string;
  resolvConf?: string;
  poolSize: number;
  poolKeep: number;
  poolIdleMs: number;
  hostStateDir: string;
}

/** Validates and defaults NetworkOptions (default mode "none": a library user opts in to CNI); throws InvalidArgumentError naming the field. */
export function compileNetworkOptions(options: NetworkOptions | undefined): CompiledNetworkOptions {
  const mode = options?.mode ?? 'none';
  if (!NETWORK_MODES.includes(mode)) throw new InvalidArgumentError(`unknown network mode "${String(mode)}" (one of ${NETWORK_MODES.join(', ')})`, 'network.mode');
  const bridge = options?.bridge ?? DEFAULT_BRIDGE;
  // Linux interface names: at most 15 bytes, no slash or space.
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(bridge)) throw new InvalidArgumentError(`invalid bridge name "${bridge}" (1-15 letters, digits, "_", "." or "-")`, 'network.bridge');
  const subnet = options?.subnet ?? DEFAULT_SUBNET;
  const gateway = gatewayOf(subnet);
  const cniPluginDir = options?.cniPluginDir ?? DEFAULT_CNI_PLUGIN_DIR;
  const poolSize = options?.poolSize ?? DEFAULT_POOL_SIZE;
  if (!Number.isInteger(poolSize) || poolSize < 0 || poolSize > 256) throw new InvalidArgumentError(`invalid network pool size ${String(poolSize)} (an integer from 0 to 256)`, 'network.pool-size');
  if (mode === 'cni') {
    const missing = CNI_PLUGINS.filter((p) => !existsSync(path.join(cniPluginDir, p)));
    if (missing.length > 0) {
      throw new InvalidArgumentError(
        `network mode "cni" needs the CNI plugins ${missing.join(', ')} in ${cniPluginDir} (Debian: apt-get install containernetworking-plugins), or set [worker.network] mode = "host" or "none"`,
        'network.cni-plugin-dir',
      );
    }
  }
  const poolKeep = options?.poolKeep ?? DEFAULT_POOL_KEEP;
  if (!Number.isInteger(poolKeep) || poolKeep < 0 || poolKeep > 256) throw new InvalidArgumentError(`invalid network pool keep ${String(poolKeep)} (an integer from 0 to 256)`, 'network.pool-keep');
  const poolIdleMs = options?.poolIdleMs ?? DEFAULT_POOL_IDLE_MS;
  if (!(poolIdleMs >= 0)) throw new InvalidArgumentError(`invalid network pool idle time ${String(poolIdleMs)} ms`, 'network.pool-idle-ms');
  const hostStateDir = path.resolve(options?.hostStateDir ?? DEFAULT_HOST_STATE_DIR);
  return { mode, bridge, subnet, gateway, cniPluginDir, poolSize, poolKeep, poolIdleMs, hostStateDir, ...(options?.resolvConf ? { resolvConf: options.resolvConf } : {}) };
}

/** The first host address of an IPv4 CIDR with room for a gateway and steps (prefix 8..29). */
export function gatewayOf(subnet: string): string {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(subnet);
  const octets = m ? m.slice(1, 5).map(Number) : [];
  const prefix = m ? Number(m[5]) : NaN;
  if (!m || octets.some((o) => o > 255) || !(prefix >= 8 && prefix <= 29)) {
    throw new InvalidArgumentError(`invalid subnet "${subnet}": want an IPv4 CIDR such as ${DEFAULT_SUBNET} (prefix 8 to 29)`, 'network.subnet');
  }
  const ip = octets.reduce((a, o) => a * 256 + o, 0);
  const size = 2 ** (32 - prefix);
  if (ip % size !== 0) throw new InvalidArgumentError(`invalid subnet "${subnet}": host bits are set (did you mean ${toDotted(ip - (ip % size))}/${prefix}?)`, 'network.subnet');
  return toDotted(ip + 1);
}

function toDotted(ip: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(ip / 2 ** s) % 256).join('.');
}
