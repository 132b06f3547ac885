import { closeSync, constants, openSync, readSync, lstatSync, readdirSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import { encodeTarHeader, tarPadding, tarTrailer, type TarHeaderInit } from '@kiln/common';

/** Size of the chunks the exported stream is grouped into. */
export const EXPORT_CHUNK_SIZE = 64 * 1024;

/**
 * Streams the tree under `dir` as a deterministic tar (see Worker.exportRef):
 * a depth-first walk with names sorted by code unit, so a directory comes
 * right before its contents; no root entry; uname/gname empty; mtimes in
 * whole seconds; a file with several links is stored once, later paths as
 * hardlinks to it. Sockets are skipped (tar cannot hold them).
 */
export async function* exportTree(dir: string, opts: { signal?: AbortSignal } = {}): AsyncGenerator<Uint8Array> {
  let parts: Buffer[] = [];
  let size = 0;
  for (const b of treeBlocks(dir, opts.signal)) {
    parts.push(b);
    size += b.length;
    if (size >= EXPORT_CHUNK_SIZE) {
      yield Buffer.concat(parts);
      parts = [];
      size = 0;
    }
  }
  parts.push(tarTrailer());
  yield Buffer.concat(parts);
}

function* treeBlocks(root: string, signal: AbortSignal | undefined): Generator<Buffer> {
  const firstPathOfInode = new Map<string, string>();
  function* walk(dirAbs: string, dirRel: string): Generator<Buffer> {
    const names = (readdirSync(dirAbs)).sort();
    for (const name of names) {
      signal?.throwIfAborted();
      const abs = path.join(dirAbs, name);
      const rel = dirRel === '' ? name : `${dirRel}/${name}`;
      const st = lstatSync(abs);
      const base = { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: Math.floor(st.mtimeMs / 1000) };
      if (st.isDirectory()) {
        yield encodeTarHeader({ ...base, name: rel, type: 'directory' });
        yield* walk(abs, rel);
      } else if (st.isSymbolicLink()) {
        yield encodeTarHeader({ ...base, name: rel, type: 'symlink', linkname: readlinkSync(abs) });
      } else if (st.isFile()) {
        const inode = `${st.dev}:${st.ino}`;
        const first = st.nlink > 1 ? firstPathOfInode.get(inode) : undefined;
        if (first !== undefined) {
          yield encodeTarHeader({ ...base, name: rel, type: 'link', linkname: first });
          continue;
        }
        if (st.nlink > 1) firstPathOfInode.set(inode, rel);
        yield encodeTarHeader({ ...base, name: rel, type: 'file', size: st.size });
        yield* fileBody(abs, st.size, rel);
      } else if (st.isFIFO() || st.isCharacterDevice() || st.isBlockDevice()) {
        const h: TarHeaderInit = { ...base, name: rel, type: st.isFIFO() ? 'fifo' : st.isCharacterDevice() ? 'character-device' : 'block-device' };
        if (!st.isFIFO()) {
          const rdev = BigInt(st.rdev);
          h.devmajor = Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
          h.devminor = Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
        }
        yield encodeTarHeader(h);
      }
    }
  }
  yield* walk(root, '');
}

// Synchronous reads: the walk is thousands of small files, and a
// promise-based call costs a thread-pool round trip each.
function* fileBody(abs: string, size: number, rel: string): Generator<Buffer> {
  const fd = openSync(abs, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    let left = size;
    while (left > 0) {
      const buf = Buffer.allocUnsafe(Math.min(EXPORT_CHUNK_SIZE, left));
      const bytesRead = readSync(fd, buf, 0, buf.length, null);
      if (bytesRead === 0) throw new Error(`${rel} shrank while it was exported`);
      left -= bytesRead;
      yield buf.subarray(0, bytesRead);
    }
  } finally {
    closeSync(fd);
  }
  const pad = tarPadding(size);
  if (pad.length > 0) yield pad;
}
