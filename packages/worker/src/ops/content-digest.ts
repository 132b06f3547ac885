import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import path from 'node:path';

/**
 * sha256 over every entry below `root` (never following symlinks): its
 * relative path, type, permission bits, uid/gid, link target and content
 * digest, in sorted path order. Mtimes are left out, so touching a file
 * does not change the digest; changing what it holds does.
 */
export function treeContentDigest(root: string): string {
  const h = createHash('sha256');
  const walk = (dir: string, rel: string) => {
    for (const name of readdirSync(dir).sort()) {
      const p = path.join(dir, name);
      const r = rel ? `${rel}/${name}` : name;
      const st = lstatSync(p);
      const type = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : 'other';
      const body = type === 'file' ? createHash('sha256').update(readFileSync(p)).digest('hex') : type === 'symlink' ? readlinkSync(p) : '';
      h.update(`${JSON.stringify([r, type, st.mode & 0o7777, st.uid, st.gid, body])}\n`);
      if (type === 'dir') walk(p, r);
    }
  };
  walk(root, '');
  return `sha256:${h.digest('hex')}`;
}
