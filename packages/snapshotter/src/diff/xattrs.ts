import { spawn } from 'node:child_process';

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
 * Reads every extended attribute under `dir` (not following symlinks) with
 * one run of `getfattr` (Debian's `attr` package): Node has no xattr API.
 * Resolves to an empty map when `getfattr` is not installed; rejects when
 * it fails otherwise.
 */
export function readTreeXattrs(dir: string, signal?: AbortSignal): Promise<TreeXattrs> {
  return new Promise((resolve, reject) => {
    const child = spawn('getfattr', ['-R', '-P', '-h', '-d', '-m', '-', '-e', 'base64', '--absolute-names', '--', dir], {
      stdio: ['ignore', 'pipe', 'pipe'],
      signal,
    });
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => {
      if (stderr.length < 4096) stderr += d.toString();
    });
    child.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? resolve(new Map()) : reject(err)));
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`getfattr exited with ${code}: ${stderr.trim()}`));
      resolve(parseGetfattr(Buffer.concat(out).toString('latin1'), dir));
    });
  });
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
