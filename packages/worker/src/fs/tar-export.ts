import { constants } from 'node:fs';
import { lstat, open, readdir, readlink } from 'node:fs/promises';
import path from 'node:path';
import { pack, type Header, type Pack } from 'tar-stream';
import { writeChunk, type StreamxReadable, type StreamxWritable } from './streamx.js';

/** Size of the chunks the exported stream is regrouped into. */
export const EXPORT_CHUNK_SIZE = 64 * 1024;

/**
 * Streams the tree under `dir` as a deterministic tar (see Worker.exportRef):
 * a depth-first walk with names sorted by code unit, so a directory comes
 * right before its contents; no root entry; uname/gname empty; mtimes in
 * whole seconds; a file with several links is stored once, later paths as
 * hardlinks to it. Sockets are skipped (tar cannot hold them).
 */
export async function* exportTree(dir: string, opts: { signal?: AbortSignal } = {}): AsyncGenerator<Uint8Array> {
  const p = pack();
  const out = p as unknown as StreamxReadable;
  let producerError: unknown;
  const producer = writeTree(p, dir, opts.signal).then(
    () => p.finalize(),
    (err: unknown) => {
      producerError = err;
      out.destroy(err as Error);
    },
  );
  let buf: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of out) {
      buf.push(chunk);
      size += chunk.byteLength;
      if (size >= EXPORT_CHUNK_SIZE) {
        yield Buffer.concat(buf);
        buf = [];
        size = 0;
      }
    }
    if (producerError) throw producerError;
    if (size > 0) yield Buffer.concat(buf);
  } catch (err) {
    throw producerError ?? err;
  } finally {
    if (!out.destroyed) out.destroy();
    await producer;
  }
}

async function writeTree(p: Pack, root: string, signal: AbortSignal | undefined): Promise<void> {
  const firstPathOfInode = new Map<string, string>();
  const walk = async (dirAbs: string, dirRel: string): Promise<void> => {
    const names = (await readdir(dirAbs)).sort();
    for (const name of names) {
      signal?.throwIfAborted();
      if ((p as unknown as StreamxReadable).destroyed) return;
      const abs = path.join(dirAbs, name);
      const rel = dirRel === '' ? name : `${dirRel}/${name}`;
      const st = await lstat(abs);
      const base: Omit<Header, 'name' | 'type' | 'size' | 'linkname' | 'devmajor' | 'devminor' | 'pax'> = {
        mode: st.mode & 0o7777,
        uid: st.uid,
        gid: st.gid,
        uname: '',
        gname: '',
        mtime: new Date(Math.floor(st.mtimeMs / 1000) * 1000),
      };
      if (st.isDirectory()) {
        await addEntry(p, { ...base, name: `${rel}/`, type: 'directory' });
        await walk(abs, rel);
      } else if (st.isSymbolicLink()) {
        await addEntry(p, { ...base, name: rel, type: 'symlink', linkname: await readlink(abs) });
      } else if (st.isFile()) {
        const inode = `${st.dev}:${st.ino}`;
        const first = st.nlink > 1 ? firstPathOfInode.get(inode) : undefined;
        if (first !== undefined) {
          await addEntry(p, { ...base, name: rel, type: 'link', linkname: first });
          continue;
        }
        if (st.nlink > 1) firstPathOfInode.set(inode, rel);
        await addFile(p, { ...base, name: rel, type: 'file', size: st.size }, abs, st.size);
      } else if (st.isFIFO() || st.isCharacterDevice() || st.isBlockDevice()) {
        const type = st.isFIFO() ? 'fifo' : st.isCharacterDevice() ? 'character-device' : 'block-device';
        const rdev = BigInt(st.rdev);
        const devmajor = Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
        const devminor = Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
        await addEntry(p, { ...base, name: rel, type, devmajor, devminor });
      }
    }
  };
  await walk(root, '');
}

function addEntry(p: Pack, header: Header | (Partial<Header> & { name: string })): Promise<void> {
  return new Promise((resolve, reject) => {
    p.entry(header, (err) => (err ? reject(err) : resolve()));
  });
}

async function addFile(p: Pack, header: Partial<Header> & { name: string }, abs: string, size: number): Promise<void> {
  const fh = await open(abs, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    let sink!: StreamxWritable;
    const done = new Promise<void>((resolve, reject) => {
      sink = p.entry(header, (err) => (err ? reject(err) : resolve())) as unknown as StreamxWritable;
    });
    done.catch(() => undefined);
    const buf = Buffer.alloc(Math.min(EXPORT_CHUNK_SIZE, Math.max(size, 1)));
    let left = size;
    while (left > 0) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, left));
      if (bytesRead === 0) throw new Error(`${header.name} shrank while it was exported`);
      left -= bytesRead;
      await writeChunk(sink, Buffer.from(buf.subarray(0, bytesRead)));
      if ((p as unknown as StreamxReadable).destroyed) return;
    }
    sink.end();
    await done;
  } finally {
    await fh.close();
  }
}
