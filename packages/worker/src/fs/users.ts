import type { llb } from '@kiln/api';
import { InvalidArgumentError } from '@kiln/common';
import { readFileInRoot, type UnmountedTree } from '@kiln/snapshotter';

/** A root to read the user databases from: a host path, or a tree read from its layers. */
export type UserRoot = string | Pick<UnmountedTree, 'readFile'>;

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
}

interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

/**
 * The records of /etc/passwd or /etc/group inside `root`, read by fd with
 * symlinks resolved inside the root (one to a host file reads nothing from
 * the host). A missing file, or one that is not a regular file, has none.
 */
async function readDbFile(root: UserRoot, file: string): Promise<string[][]> {
  try {
    const text = (typeof root === 'string' ? readFileInRoot(root, file) : await root.readFile(file)).toString('utf8');
    return text
      .split('\n')
      .filter((l) => l.trim() !== '' && !l.startsWith('#'))
      .map((l) => l.split(':'));
  } catch (err) {
    if (['ENOENT', 'ENOTDIR', 'EISDIR', 'EINVAL'].includes((err as NodeJS.ErrnoException).code ?? '')) return [];
    throw err;
  }
}

async function passwd(root: UserRoot): Promise<PasswdEntry[]> {
  return (await readDbFile(root, '/etc/passwd')).map((f) => ({ name: f[0] ?? '', uid: Number(f[2]), gid: Number(f[3]) }));
}

async function groups(root: UserRoot): Promise<GroupEntry[]> {
  return (await readDbFile(root, '/etc/group')).map((f) => ({
    name: f[0] ?? '',
    gid: Number(f[2]),
    members: (f[3] ?? '').split(',').filter(Boolean),
  }));
}

const isNumeric = (s: string): boolean => /^\d+$/.test(s);

/**
 * Resolves an exec `user` ("", "name", "uid", "name:group", "uid:gid") with
 * the /etc/passwd and /etc/group inside `root`, as runc's GetExecUser does:
 * a numeric uid without a group takes the passwd entry's gid (or 0); a
 * user's supplementary groups come from /etc/group unless a group is given.
 * No user is root, with root's groups. The primary gid always leads the
 * supplementary list (containerd's fix for CVE-2023-25173: a process whose
 * list lacked it could shed it with setgroups and pass a `g-rwx` check).
 */
export async function resolveExecUser(root: UserRoot, spec: string): Promise<{ uid: number; gid: number; additionalGids: number[] }> {
  const { uid, gid, additionalGids } = await resolveUserGroups(root, spec === '' ? '0' : spec);
  return { uid, gid, additionalGids: [...new Set([gid, ...additionalGids])] };
}

async function resolveUserGroups(root: UserRoot, spec: string): Promise<{ uid: number; gid: number; additionalGids: number[] }> {
  const [userPart = '', groupPart] = spec.split(':', 2);
  const users = await passwd(root);
  let uid: number;
  let gid = 0;
  let name: string | undefined;
  if (isNumeric(userPart)) {
    uid = Number(userPart);
    const u = users.find((e) => e.uid === uid);
    if (u) {
      gid = u.gid;
      name = u.name;
    }
  } else {
    const u = users.find((e) => e.name === userPart);
    if (!u) throw new InvalidArgumentError(`unable to find user ${userPart}: no matching entries in passwd file`, 'user');
    uid = u.uid;
    gid = u.gid;
    name = u.name;
  }
  const all = await groups(root);
  // As runc: an explicit group replaces the primary one and drops the supplementary ones.
  if (groupPart !== undefined && groupPart !== '') return { uid, gid: await resolveGroup(all, groupPart), additionalGids: [] };
  const additionalGids = name ? [...new Set(all.filter((g) => g.members.includes(name!) && g.gid !== gid).map((g) => g.gid))] : [];
  return { uid, gid, additionalGids };
}

async function resolveGroup(all: GroupEntry[], g: string): Promise<number> {
  if (isNumeric(g)) return Number(g);
  const found = all.find((e) => e.name === g);
  if (!found) throw new InvalidArgumentError(`unable to find group ${g}: no matching entries in group file`, 'group');
  return found.gid;
}

/**
 * Resolves a FileOp ChownOpt against `root` (the destination tree), as
 * BuildKit does: a user by id without a group uses the same number as gid;
 * a user by name takes its passwd gid. Undefined when no owner is set.
 */
export async function resolveChown(root: string, owner: llb.ChownOpt | undefined): Promise<{ uid: number; gid: number } | undefined> {
  if (!owner || (!owner.user?.user.case && !owner.group?.user.case)) return undefined;
  let uid = 0;
  let gid = 0;
  const u = owner.user?.user;
  if (u?.case === 'id') {
    uid = u.value;
    gid = u.value;
  } else if (u?.case === 'name') {
    const found = (await passwd(root)).find((e) => e.name === u.value);
    if (!found) throw new InvalidArgumentError(`unable to find user ${u.value}: no matching entries in passwd file`, 'user');
    uid = found.uid;
    gid = found.gid;
  }
  const g = owner.group?.user;
  if (g?.case === 'id') gid = g.value;
  else if (g?.case === 'name') gid = await resolveGroup(await groups(root), g.value);
  return { uid, gid };
}
