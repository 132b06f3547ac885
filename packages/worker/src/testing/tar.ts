import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import path from 'node:path';
import { encodeTarHeader, PatternMatcher, readTarEntries, tarPadding, tarTrailer, type TarEntryType } from '@kiln/common';

/** One tar entry as the tests see it. */
export interface TarEntry {
  /** Entry path; directories end with "/" (as exportRef writes them). */
  name: string;
  type: TarEntryType;
  mode: number;
  uid: number;
  gid: number;
  /** Unix seconds. */
  mtime: number;
  linkname?: string;
  data: Buffer;
}

/** An entry to write with buildTar; defaults: file, mode 0644 (dirs 0755), uid/gid 0, mtime 0. */
export type TarEntryInit = Partial<Omit<TarEntry, 'data'>> & { name: string; data?: string | Uint8Array };

/** A tar of exactly `entries`, in order (hostile names and links welcome). */
export async function buildTar(entries: TarEntryInit[]): Promise<Uint8Array> {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const type = e.type ?? 'file';
    const data = type === 'file' && e.data !== undefined ? Buffer.from(e.data) : Buffer.alloc(0);
    parts.push(encodeTarHeader({ name: e.name, type, mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime, linkname: e.linkname, size: data.length }));
    parts.push(data, tarPadding(data.length));
  }
  parts.push(tarTrailer());
  return Buffer.concat(parts);
}

/** Reads every entry of a tar stream. */
export async function readTar(chunks: AsyncIterable<Uint8Array> | Uint8Array): Promise<TarEntry[]> {
  const out: TarEntry[] = [];
  for await (const { header: h, body } of readTarEntries(chunks instanceof Uint8Array ? one(chunks) : chunks)) {
    const parts: Buffer[] = [];
    for await (const c of body) parts.push(c);
    out.push({
      name: h.type === 'directory' ? `${h.name}/` : h.name,
      type: h.type,
      mode: h.mode,
      uid: h.uid,
      gid: h.gid,
      mtime: Math.floor(h.mtime),
      ...(h.linkname ? { linkname: h.linkname } : {}),
      data: Buffer.concat(parts),
    });
  }
  return out;
}

async function* one(b: Uint8Array): AsyncGenerator<Uint8Array> {
  yield b;
}

/** Concatenates a byte stream. */
export async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of chunks) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

/**
 * Tars the files of `dir` that pass Docker-style include/exclude patterns,
 * as a client session does for a local source: paths relative to `dir`,
 * parents of included files included, modes, owners, mtimes and symlinks
 * kept. Sorted, so the same tree gives the same bytes.
 */
export async function packDirectory(dir: string, patterns: { include?: readonly string[]; exclude?: readonly string[] } = {}): Promise<Uint8Array> {
  const include = new PatternMatcher(patterns.include ?? []);
  const exclude = new PatternMatcher(patterns.exclude ?? []);
  const entries: TarEntryInit[] = [];
  const walk = async (abs: string, rel: string): Promise<boolean> => {
    let any = false;
    for (const name of (await readdir(abs)).sort()) {
      const childAbs = path.join(abs, name);
      const childRel = rel ? `${rel}/${name}` : name;
      if (!exclude.empty && exclude.matches(childRel)) continue;
      const st = await lstat(childAbs);
      const included = include.empty || include.matches(childRel);
      const base = { name: childRel, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: Math.floor(st.mtimeMs / 1000) };
      if (st.isDirectory()) {
        if (!included && !include.mayMatchUnder(childRel)) continue;
        const at = entries.length;
        entries.push({ ...base, type: 'directory' });
        if (!(await walk(childAbs, childRel)) && !included) entries.splice(at, 1);
        else any = true;
      } else if (included) {
        any = true;
        if (st.isSymbolicLink()) entries.push({ ...base, type: 'symlink', linkname: await readlink(childAbs) });
        else if (st.isFile()) entries.push({ ...base, type: 'file', data: await readFile(childAbs) });
      }
    }
    return any;
  };
  await walk(dir, '');
  return buildTar(entries);
}
