import { readFileSync } from 'node:fs';
import { InvalidArgumentError } from '@kiln/common';
import type { ExecSpec } from '../../executor.js';
import { defaultSeccompProfile } from './seccomp.js';

/** Capabilities Docker and BuildKit grant a build step by default. */
export const DEFAULT_CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
];

/** The mounts every container gets, as `runc spec` writes them. */
export const STANDARD_MOUNTS = [
  { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
  { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
  { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
  { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
  { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
  { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
  { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'] },
];

/** Every capability, by number (CAP_CHOWN is 0). */
const CAPABILITY_NUMBERS = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_DAC_READ_SEARCH', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_KILL', 'CAP_SETGID', 'CAP_SETUID',
  'CAP_SETPCAP', 'CAP_LINUX_IMMUTABLE', 'CAP_NET_BIND_SERVICE', 'CAP_NET_BROADCAST', 'CAP_NET_ADMIN', 'CAP_NET_RAW', 'CAP_IPC_LOCK',
  'CAP_IPC_OWNER', 'CAP_SYS_MODULE', 'CAP_SYS_RAWIO', 'CAP_SYS_CHROOT', 'CAP_SYS_PTRACE', 'CAP_SYS_PACCT', 'CAP_SYS_ADMIN',
  'CAP_SYS_BOOT', 'CAP_SYS_NICE', 'CAP_SYS_RESOURCE', 'CAP_SYS_TIME', 'CAP_SYS_TTY_CONFIG', 'CAP_MKNOD', 'CAP_LEASE',
  'CAP_AUDIT_WRITE', 'CAP_AUDIT_CONTROL', 'CAP_SETFCAP', 'CAP_MAC_OVERRIDE', 'CAP_MAC_ADMIN', 'CAP_SYSLOG', 'CAP_WAKE_ALARM',
  'CAP_BLOCK_SUSPEND', 'CAP_AUDIT_READ', 'CAP_PERFMON', 'CAP_BPF', 'CAP_CHECKPOINT_RESTORE',
];

let hostCapabilities: string[] | undefined;

/**
 * What `--security=insecure` grants: every capability in this process's
 * bounding set (as Docker's --privileged), since runc cannot grant more.
 */
export function privilegedCapabilities(): string[] {
  if (hostCapabilities) return hostCapabilities;
  let bounding = (1n << BigInt(CAPABILITY_NUMBERS.length)) - 1n;
  try {
    const line = /^CapBnd:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (line) bounding = BigInt(`0x${line[1]}`);
  } catch {
    // not Linux: keep every capability
  }
  hostCapabilities = CAPABILITY_NUMBERS.filter((_, i) => (bounding >> BigInt(i)) & 1n);
  return hostCapabilities;
}

/** /proc and /sys entries hidden from a sandboxed step (as Docker and BuildKit do). */
export const MASKED_PATHS = [
  '/proc/acpi',
  '/proc/asound',
  '/proc/kcore',
  '/proc/keys',
  '/proc/latency_stats',
  '/proc/timer_list',
  '/proc/timer_stats',
  '/proc/sched_debug',
  '/proc/scsi',
  '/sys/firmware',
  '/sys/devices/virtual/powercap',
];

/** /proc entries a sandboxed step may read but not write. */
export const READONLY_PATHS = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

/** Open files per process when the step sets no `nofile` ulimit (containerd's default). */
export const DEFAULT_NOFILE = 1024;

const ULIMIT_NAMES = new Set(['as', 'core', 'cpu', 'data', 'fsize', 'locks', 'memlock', 'msgqueue', 'nice', 'nofile', 'nproc', 'rss', 'rtprio', 'rttime', 'sigpending', 'stack']);

export interface OciMount {
  destination: string;
  type: string;
  source: string;
  options: string[];
}

/**
 * The OCI runtime config (config.json) for one run: the rootfs and mounts
 * the worker prepared, the standard mounts, fresh pid/ipc/uts/mount
 * namespaces plus a network namespace of its own unless the step asked for
 * the host's (the worker's wired one when the spec names it). A sandboxed step gets BuildKit's default capabilities, the
 * default seccomp profile, masked and read-only /proc paths and a read-only
 * /sys; an insecure one every capability, no seccomp, writable /sys and
 * cgroups and every device allowed.
 */
export function ociSpec(spec: ExecSpec): Record<string, unknown> {
  const insecure = spec.security === 'insecure';
  const mounts: OciMount[] = STANDARD_MOUNTS.map((m) => ({
    ...m,
    options: insecure && (m.destination === '/sys' || m.destination === '/sys/fs/cgroup') ? m.options.map((o) => (o === 'ro' ? 'rw' : o)) : [...m.options],
  }));
  if (spec.shmSizeBytes) {
    const shm = mounts.find((m) => m.destination === '/dev/shm')!;
    shm.options = [...shm.options.filter((o) => !o.startsWith('size=')), `size=${spec.shmSizeBytes}`];
  }
  for (const m of spec.mounts) {
    if (m.type === 'bind') mounts.push({ destination: m.dest, type: 'bind', source: m.source, options: ['rbind', m.readonly ? 'ro' : 'rw'] });
    else mounts.push({ destination: m.dest, type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777', ...(m.sizeBytes ? [`size=${m.sizeBytes}`] : [])] });
  }
  const namespaces: { type: string; path?: string }[] = [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }];
  if (spec.network === 'sandbox' && spec.networkNamespace) namespaces.push({ type: 'network', path: spec.networkNamespace });
  else if (spec.network !== 'host') namespaces.push({ type: 'network' });
  const caps = insecure ? privilegedCapabilities() : DEFAULT_CAPABILITIES;
  const linux: Record<string, unknown> = {
    namespaces,
    resources: { devices: [{ allow: insecure, access: 'rwm' }] },
  };
  if (!insecure) {
    linux.maskedPaths = MASKED_PATHS;
    linux.readonlyPaths = READONLY_PATHS;
    linux.seccomp = defaultSeccompProfile();
  }
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: spec.process.user.uid, gid: spec.process.user.gid, additionalGids: spec.process.user.additionalGids },
      args: spec.process.args,
      env: spec.process.env,
      cwd: spec.process.cwd,
      capabilities: { bounding: caps, effective: caps, permitted: caps },
      rlimits: rlimits(spec),
      noNewPrivileges: false,
    },
    root: { path: spec.rootfs, readonly: spec.readonlyRootfs },
    hostname: spec.hostname,
    mounts,
    linux,
  };
}

/** OCI rlimits: the step's ulimits over the default open-files limit. */
function rlimits(spec: ExecSpec): { type: string; soft: number; hard: number }[] {
  const byName = new Map<string, { soft: number; hard: number }>([['nofile', { soft: DEFAULT_NOFILE, hard: DEFAULT_NOFILE }]]);
  for (const r of spec.rlimits) {
    if (!ULIMIT_NAMES.has(r.name)) throw new InvalidArgumentError(`unknown ulimit "${r.name}"`, 'ulimit');
    byName.set(r.name, { soft: r.soft, hard: r.hard });
  }
  return [...byName].map(([name, l]) => ({ type: `RLIMIT_${name.toUpperCase()}`, soft: l.soft, hard: l.hard }));
}

/**
 * config.json text for `ociSpec(spec)`. An rlimit of -1 (Docker's
 * "unlimited") becomes RLIM_INFINITY, a uint64 that JSON numbers in
 * JavaScript cannot hold exactly.
 */
export function serializeOciSpec(config: Record<string, unknown>): string {
  return JSON.stringify(config).replace(/"(soft|hard)":-1\b/g, '"$1":18446744073709551615');
}
