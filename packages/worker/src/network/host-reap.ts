import { lstatSync, readFileSync, realpathSync } from 'node:fs';
import { lstat, readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { execLight, unmountFs, type Logger } from '@kiln/common';
import { removeEmptyInRoot } from '@kiln/snapshotter';
import { sweepMasqueradeRules } from './iptables-sweep.js';
import { ownerAlive, readOwnerRecords, removeOwnerRecord } from './owner.js';

/** A step namespace's container id, as its pin file is named: `kiln-<tag>-<life>-<random>`, or `kiln-<tag>-<random>` before lives were recorded. */
const STEP_ID = /^kiln-[0-9a-f]{8}-(?:[0-9a-f]{8}-)?[0-9a-f]{12}$/;
const LEGACY_STEP_ID = /^kiln-[0-9a-f]{8}-[0-9a-f]{12}$/;

/**
 * Reaps, host-wide, the step networks of daemons that died without cleaning
 * up and whose state dir no daemon will open again (a test or CI harness
 * that SIGKILLs a daemon and removes its root): their namespaces pinned by
 * nsfs mounts, the veths on the bridge, host-local allocations and NAT
 * rules. A daemon's own restart on its state dir reaps them too
 * (NetworkProvider.reapStale); this covers the roots nobody restarts.
 *
 * Dead means (see owner.ts) an owner record whose process is gone, or, for
 * namespaces made before owner records existed, a pin whose step record
 * (`<state dir>/net/steps/<id>.json`, written before the namespace and
 * removed after it) is gone: the state dir was deleted around the mount
 * (`rm -rf` cannot remove a mount point), and NAT rules of such ids that no
 * pin or allocation names any more. A live daemon's never qualify.
 *
 * Paths: mount points come from /proc/self/mountinfo (nsfs only, named as
 * step pins, under `.../net/netns/`); one whose path resolves elsewhere (a
 * symlink on the way) is left alone, unmounted with the real path only, and
 * its pin file removed with a walk that never follows a symlink. Nothing is
 * removed recursively. Allocation files are removed under host-local's own
 * lock, so an address freed here and taken by a live daemon meanwhile is
 * never removed. Never rejects.
 */
export async function reapDeadOwners(hostStateDir: string, logger: Logger): Promise<void> {
  try {
    const dead = (await readOwnerRecords(hostStateDir)).filter((o) => !ownerAlive(o));
    const prefixes = dead.map((o) => o.prefix);
    const pins = deadPins(prefixes);
    // Pins without a record of their owner: exact ids.
    const ids = pins.map((p) => path.basename(p)).filter((id) => LEGACY_STEP_ID.test(id));
    const orphanRules = await legacyRulesWithoutNamespace(path.join(hostStateDir, 'ipam')).catch(() => []);
    const marks = [...prefixes, ...ids, ...orphanRules];
    if (marks.length === 0) return;
    for (const pin of pins) await releasePin(pin, logger);
    const ips = await releaseAllocations(path.join(hostStateDir, 'ipam'), marks, logger);
    const rules = await sweepMasqueradeRules(marks).catch((err: unknown) => {
      logger.warn({ err }, 'failed to sweep NAT rules of dead daemons');
      return 0;
    });
    for (const o of dead) await removeOwnerRecord(hostStateDir, o.prefix);
    logger.info({ owners: dead.map((o) => ({ pid: o.pid, stateDir: o.stateDir })), namespaces: pins.length, orphanRules: orphanRules.length, ips, rules }, 'reaped step networks of dead daemons');
  } catch (err) {
    logger.warn({ err }, 'failed to reap step networks of dead daemons');
  }
}

/** Mount points of step namespaces (nsfs pins) owned by `prefixes`, or made before owner records and whose step record is gone. */
function deadPins(prefixes: string[]): string[] {
  const out: string[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0 || line.slice(sep + 3).split(' ')[0] !== 'nsfs') continue;
    const mountPoint = unescapeMountinfo(line.split(' ')[4] ?? '');
    const id = path.basename(mountPoint);
    const netnsDir = path.dirname(mountPoint);
    if (!STEP_ID.test(id) || !netnsDir.endsWith('/net/netns')) continue;
    if (prefixes.some((p) => id.startsWith(p))) out.push(mountPoint);
    else if (LEGACY_STEP_ID.test(id) && !exists(path.join(path.dirname(netnsDir), 'steps', `${id}.json`))) out.push(mountPoint);
  }
  return out;
}

/**
 * Container ids (made before owner records) that only NAT rules still name:
 * no namespace pin of that id is mounted and no allocation holds it. A live
 * daemon's step has its pin from before its ADD (which makes the rules)
 * until after its DEL (which removes them), so such rules are a dead
 * daemon's whose pins were unmounted by hand or whose root was cleaned.
 */
async function legacyRulesWithoutNamespace(ipamDir: string): Promise<string[]> {
  const { stdout } = await execLight('iptables', ['-w', '-t', 'nat', '-S']);
  const named = new Set([...stdout.matchAll(/ id: \\"(kiln-[0-9a-f]{8}-[0-9a-f]{12})\\"/g)].map((m) => m[1]!));
  if (named.size === 0) return [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) named.delete(path.basename(line.split(' ')[4] ?? ''));
  for (const dir of await readdir(ipamDir).catch(() => [])) {
    for (const f of await readdir(path.join(ipamDir, dir)).catch(() => [])) {
      if (!/^[0-9.]+$/.test(f)) continue;
      const id = (await readFile(path.join(ipamDir, dir, f), 'utf8').catch(() => '')).split(/\r?\n/)[0]!;
      named.delete(id);
    }
  }
  return [...named];
}

/** Deletes the pin's veth (its peer on the bridge goes with it, even if a process still holds the namespace), unmounts it and removes the empty pin file. */
async function releasePin(pin: string, logger: Logger): Promise<void> {
  try {
    if (realpathSync(pin) !== pin) {
      logger.warn({ pin }, 'not reaping a step namespace whose path leads through a symlink');
      return;
    }
  } catch {
    return; // gone meanwhile
  }
  await execLight('nsenter', [`--net=${pin}`, 'ip', 'link', 'delete', 'eth0']).catch(() => undefined);
  await unmountFs(pin, { lazy: true }).catch(() => undefined);
  try {
    removeEmptyInRoot('/', pin);
  } catch (err) {
    logger.debug({ err, pin }, 'left a reaped namespace pin file');
  }
}

/**
 * Removes host-local allocation files (one per address, holding the
 * container id) whose id starts with one of `marks`, in every network dir
 * under `ipamDir`, each dir under host-local's lock (`<dir>/lock`, flock).
 * Returns how many it removed.
 */
async function releaseAllocations(ipamDir: string, marks: string[], logger: Logger): Promise<number> {
  // The first line is the container id (host-local ends it with \r\n, the interface name follows).
  const script = [
    'd=$1; shift',
    'for f in "$d"/*; do',
    '  n=${f##*/}',
    '  case $n in ""|*[!0-9.]*) continue ;; esac',
    '  [ -f "$f" ] && [ ! -L "$f" ] || continue',
    '  id=; IFS= read -r id < "$f"',
    '  for m in "$@"; do case $id in "$m"*) rm -f "$f"; echo "$n"; break ;; esac; done',
    'done',
  ].join('\n');
  let removed = 0;
  for (const name of await readdir(ipamDir).catch(() => [])) {
    const dir = path.join(ipamDir, name);
    if (!name.startsWith('kiln-') || !(await lstat(dir)).isDirectory()) continue;
    try {
      const { stdout } = await execLight('flock', ['-x', '-w', '30', path.join(dir, 'lock'), 'sh', '-c', script, 'sh', dir, ...marks]);
      removed += stdout.split('\n').filter(Boolean).length;
    } catch (err) {
      logger.warn({ err, dir }, 'failed to release IP allocations of dead daemons');
    }
  }
  return removed;
}

function exists(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

/** mountinfo escapes space, tab, newline and backslash as \ooo. */
function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}
