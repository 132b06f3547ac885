import { spawn } from 'node:child_process';
import { createReadStream, openSync, readSync, closeSync } from 'node:fs';
import { createGunzip } from 'node:zlib';
import type { Readable } from 'node:stream';
import { cleanRootPath, resolveInRoot } from '@kiln/snapshotter';
import { lstatOrUndefined, mkdirAllInRoot } from './fs-util.js';
import { extractTar } from './untar.js';

type Compression = 'none' | 'gzip' | 'bzip2' | 'xz' | 'zstd';

/** What the first bytes of a file say: a (compressed) tar archive, or not an archive. */
export function detectArchive(file: string): Compression | undefined {
  const head = Buffer.alloc(512);
  const fd = openSync(file, 'r');
  let n: number;
  try {
    n = readSync(fd, head, 0, head.length, 0);
  } finally {
    closeSync(fd);
  }
  const b = head.subarray(0, n);
  if (b[0] === 0x1f && b[1] === 0x8b) return 'gzip';
  if (b.subarray(0, 3).toString('latin1') === 'BZh') return 'bzip2';
  if (b.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return 'xz';
  if (b.subarray(0, 4).equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))) return 'zstd';
  if (n >= 262 && b.subarray(257, 262).toString('latin1') === 'ustar') return 'none';
  return undefined;
}

function decompressed(file: string, kind: Compression): Readable {
  const raw = createReadStream(file);
  if (kind === 'none') return raw;
  if (kind === 'gzip') return raw.pipe(createGunzip());
  const tool = { bzip2: 'bzip2', xz: 'xz', zstd: 'zstd' }[kind];
  const child = spawn(tool, ['-dc'], { stdio: ['pipe', 'pipe', 'ignore'] });
  raw.pipe(child.stdin);
  return child.stdout;
}

/**
 * ADD's archive handling (Docker compatibility): when `src` (no wildcard
 * expansion here) names a regular file that is a tar archive, plain or
 * gzip/bzip2/xz/zstd compressed, it is extracted into the directory `dest`
 * (paths kept inside `destRoot`) and true is returned; otherwise false and
 * the caller copies it as a file. `owner` (ADD --chown) owns every
 * extracted entry and created directory, as BuildKit's untar ChownOpts.
 */
export async function unpackIfArchive(
  srcRoot: string,
  src: string,
  destRoot: string,
  dest: string,
  opts: { owner?: { uid: number; gid: number }; signal?: AbortSignal } = {},
): Promise<boolean> {
  const srcAbs = await resolveInRoot(srcRoot, cleanRootPath(src), { followFinalSymlink: true });
  const fi = await lstatOrUndefined(srcAbs);
  if (!fi?.isFile()) return false;
  const kind = detectArchive(srcAbs);
  if (!kind) return false;
  const destRel = cleanRootPath(dest);
  await mkdirAllInRoot(destRoot, destRel, { mode: 0o755, uid: opts.owner?.uid, gid: opts.owner?.gid });
  const destAbs = await resolveInRoot(destRoot, destRel, { followFinalSymlink: true });
  await extractTar(destAbs, decompressed(srcAbs, kind), { signal: opts.signal, owner: opts.owner });
  return true;
}
