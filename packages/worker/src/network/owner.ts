import { readFileSync, readlinkSync } from 'node:fs';
import { constants, open, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';

/**
 * Who holds the step networks of one daemon life, recorded host-wide
 * (`<hostStateDir>/owners/<prefix>.json`) before its first namespace exists:
 * every container id of that life starts with `prefix`
 * (`kiln-<state dir tag>-<life>-`), so a later daemon can tell whether what
 * carries it belongs to a live process. A pid alone is not enough (pids are
 * reused): the record keeps the process's start time (field 22 of
 * /proc/PID/stat, clock ticks since boot) and its pid namespace, and the
 * owner is dead only when no process with that pid and start time exists in
 * the same pid namespace. A record from another pid namespace is never
 * judged (treated as alive). The dir is tmpfs (/run): records go at a
 * reboot, with the namespaces.
 */
export interface NetworkOwner {
  prefix: string;
  pid: number;
  startTime: string;
  pidNamespace: string;
  /** The daemon's state dir (for logs and humans; never used as a path to delete under). */
  stateDir: string;
}

export function ownersDir(hostStateDir: string): string {
  return path.join(hostStateDir, 'owners');
}

function recordFile(hostStateDir: string, prefix: string): string {
  return path.join(ownersDir(hostStateDir), `${prefix.replace(/-$/, '')}.json`);
}

/** The start time of process `pid` (clock ticks after boot), or undefined when there is none. */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count fields after its last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function pidNamespace(): string {
  try {
    return readlinkSync('/proc/self/ns/pid');
  } catch {
    return '';
  }
}

/** This process as the owner of `prefix`. */
export function thisProcessOwner(prefix: string, stateDir: string): NetworkOwner {
  return { prefix, pid: process.pid, startTime: processStartTime(process.pid) ?? '', pidNamespace: pidNamespace(), stateDir };
}

export async function writeOwnerRecord(hostStateDir: string, owner: NetworkOwner): Promise<void> {
  await writeFile(recordFile(hostStateDir, owner.prefix), JSON.stringify(owner), { mode: 0o600 });
}

export async function removeOwnerRecord(hostStateDir: string, prefix: string): Promise<void> {
  await rm(recordFile(hostStateDir, prefix), { force: true });
}

/** Whether the owner's process still runs (or cannot be judged from here). */
export function ownerAlive(owner: NetworkOwner): boolean {
  if (owner.pidNamespace !== pidNamespace()) return true;
  const started = processStartTime(owner.pid);
  return started !== undefined && started === owner.startTime;
}

/** Every owner record of the host (unreadable or malformed ones are skipped); symlinks are not followed. */
export async function readOwnerRecords(hostStateDir: string): Promise<NetworkOwner[]> {
  const out: NetworkOwner[] = [];
  for (const name of await readdir(ownersDir(hostStateDir)).catch(() => [])) {
    if (!/^kiln-[0-9a-f]{8}-[0-9a-f]{8}\.json$/.test(name)) continue;
    try {
      const fh = await open(path.join(ownersDir(hostStateDir), name), constants.O_RDONLY | constants.O_NOFOLLOW);
      const text = await fh.readFile('utf8').finally(() => fh.close());
      const o = JSON.parse(text) as NetworkOwner;
      if (typeof o.pid === 'number' && typeof o.startTime === 'string' && o.prefix === `${name.slice(0, -5)}-`) out.push(o);
    } catch {
      // half-written or not ours: left alone
    }
  }
  return out;
}
