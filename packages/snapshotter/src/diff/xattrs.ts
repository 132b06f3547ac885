import { readXattrPaths, readXattrTree, runLight, SpawnError, type XattrMap } from '@kiln/common';

/** Extended attributes of a tree: path relative to its root -> (name -> value). Paths without any are absent. */
export type TreeXattrs = ReadonlyMap<string, Readonly<Record<string, Buffer>>>;

/**
 * Names never carried in a layer: overlayfs' own bookkeeping, SELinux labels
 * (the host's policy, not the image's) and `system.*` (ACLs, NFS).
 */
function carried(name: string): boolean {
  return !name.startsWith('trusted.overlay.') && name !== 'security.selinux' && !name.startsWith('system.');
}

/**
 * Reads every extended attribute under `dir` (not following symlinks):
 * by system calls on @kiln/common's xattr thread (`readXattrTree`), or,
 * where those are not available, with one run of `getfattr` (Debian's
 * `attr` package; Node has no xattr API) through the spawn helper
 * (`runLight`: a fork of the daemon's heap for each of a 40-layer export's
 * 80 trees blocked its event loop for 3.7 s in all on a loaded host).
 * Either way resolves to the same map; empty when neither is available
 * (`getfattr` not installed); rejects when reading fails otherwise.
 */
export async function readTreeXattrs(dir: string, signal?: AbortSignal): Promise<TreeXattrs> {
  signal?.throwIfAborted();
  const native = await readXattrTree(dir);
  signal?.throwIfAborted();
  if (native) return carriedOnly(native);
  return runGetfattr(['-R', '-P', '-h', '-d', '-m', '-', '-e', 'base64', '--absolute-names', '--', dir], dir, signal);
}

/** The map without the names layers never carry (see `carried`). */
function carriedOnly(map: XattrMap): TreeXattrs {
  for (const [rel, attrs] of map) {
    for (const name of Object.keys(attrs)) if (!carried(name)) delete attrs[name];
    if (Object.keys(attrs).length === 0) map.delete(rel);
  }
  return map;
}

/** One `getfattr` run with `args`, its output parsed relative to `dir` (empty when getfattr is not installed). */
async function runGetfattr(args: string[], dir: string, signal?: AbortSignal): Promise<TreeXattrs> {
  signal?.throwIfAborted();
  const out: Uint8Array[] = [];
  let stderr = '';
  let exit;
  try {
    exit = await runLight('getfattr', args, {
      stdout: (d) => out.push(d),
      stderr: (d) => {
        if (stderr.length < 4096) stderr += Buffer.from(d).toString();
      },
    });
  } catch (err) {
    if (err instanceof SpawnError && err.code === 'ENOENT') return new Map();
    throw err;
  }
  signal?.throwIfAborted();
  if (exit.code !== 0) throw new Error(`getfattr exited with ${exit.signal ?? exit.code}: ${stderr.trim()}`);
  return parseGetfattr(Buffer.concat(out).toString('latin1'), dir);
}

/** Parses `getfattr -d -e base64 --absolute-names` output into paths relative to `dir`. */
export function parseGetfattr(text: string, dir: string): TreeXattrs {
  const root = dir.replace(/\/+$/, '');
  const map = new Map<string, Record<string, Buffer>>();
  let current: Record<string, Buffer> | undefined;
  for (const line of text.split('\n')) {
    if (line.startsWith('# file: ')) {
      const abs = unescapeName(line.slice('# file: '.length));
      const rel = abs === root ? '' : abs.startsWith(`${root}/`) ? abs.slice(root.length + 1) : undefined;
      current = rel ? {} : undefined;
      if (rel && current) map.set(rel, current);
      continue;
    }
    if (!current || line === '') continue;
    const eq = line.indexOf('=');
    const name = eq < 0 ? line : line.slice(0, eq);
    const raw = eq < 0 ? '' : line.slice(eq + 1);
    if (!carried(name)) continue;
    current[name] = raw.startsWith('0s') ? Buffer.from(raw.slice(2), 'base64') : raw.startsWith('0x') ? Buffer.from(raw.slice(2), 'hex') : Buffer.from(raw.replace(/^"|"$/g, ''), 'latin1');
  }
  for (const [k, v] of map) if (Object.keys(v).length === 0) map.delete(k);
  return map;
}

/** getfattr writes bytes outside printable ASCII (and backslash) in names as \ooo. */
function unescapeName(s: string): string {
  const bytes = Buffer.from(s.replace(/\\(\\|[0-7]{3})/g, (_, e: string) => (e === '\\' ? '\\' : String.fromCharCode(parseInt(e, 8)))), 'latin1');
  return bytes.toString('utf8');
}

/** Most paths given to one `getfattr` run by `readPathsXattrs` (keeps its command line short). */
const PATHS_PER_RUN = 500;

/**
 * Extended attributes of the given entries of `dir` (paths relative to it,
 * not followed, directories not descended), as `readTreeXattrs` reads them:
 * for a diff that compares a few paths of a big tree. Empty list: no run.
 */
export async function readPathsXattrs(dir: string, rels: readonly string[], signal?: AbortSignal): Promise<TreeXattrs> {
  signal?.throwIfAborted();
  const native = await readXattrPaths(dir, rels);
  signal?.throwIfAborted();
  if (native) return carriedOnly(native);
  const root = dir.replace(/\/+$/, '');
  const out = new Map<string, Readonly<Record<string, Buffer>>>();
  for (let i = 0; i < rels.length; i += PATHS_PER_RUN) {
    const paths = rels.slice(i, i + PATHS_PER_RUN).map((r) => `${root}/${r}`);
    for (const [k, v] of await runGetfattr(['-P', '-h', '-d', '-m', '-', '-e', 'base64', '--absolute-names', '--', ...paths], root, signal)) out.set(k, v);
  }
  return out;
}
