import { spawn } from 'node:child_process';
import { Readable, pipeline } from 'node:stream';
import { createGunzip } from 'node:zlib';

export type LayerCompression = 'none' | 'gzip' | 'zstd';

const GZIP_MAGIC = [0x1f, 0x8b];
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

/** The compression of a stream from its first bytes (tar itself has no magic at offset 0). */
export function sniffCompression(head: Uint8Array): LayerCompression {
  const starts = (magic: number[]) => magic.every((b, i) => head[i] === b);
  if (starts(GZIP_MAGIC)) return 'gzip';
  if (starts(ZSTD_MAGIC)) return 'zstd';
  return 'none';
}

/**
 * Decompresses `src` after looking at its first bytes: gzip with zlib, zstd
 * through the `zstd` CLI as a stream filter (Node 20's zlib has none), a
 * plain tar as is. Breaking off the iteration closes the source (and kills
 * the filter); a filter failure surfaces in the iteration.
 */
export async function decompressStream(src: AsyncIterable<Uint8Array>): Promise<{ compression: LayerCompression; stream: AsyncIterable<Uint8Array> }> {
  const it = src[Symbol.asyncIterator]();
  const buffered: Uint8Array[] = [];
  let have = 0;
  let ended = false;
  while (have < ZSTD_MAGIC.length) {
    const r = await it.next();
    if (r.done) {
      ended = true;
      break;
    }
    buffered.push(r.value);
    have += r.value.byteLength;
  }
  const head = Buffer.concat(buffered.map((b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength)));
  const compression = sniffCompression(head);
  async function* whole(): AsyncGenerator<Uint8Array> {
    try {
      yield* buffered;
      if (ended) return;
      for (;;) {
        const r = await it.next();
        if (r.done) {
          ended = true;
          return;
        }
        yield r.value;
      }
    } finally {
      if (!ended) await it.return?.();
    }
  }
  if (compression === 'gzip') {
    const z = createGunzip();
    pipeline(Readable.from(whole()), z, () => undefined); // an error destroys `z`, surfacing in the iteration
    return { compression, stream: z };
  }
  if (compression === 'zstd') return { compression, stream: zstdDecompress(whole()) };
  return { compression, stream: whole() };
}

/** `zstd -d` as a filter; its stderr becomes the error message when it fails. */
async function* zstdDecompress(src: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  const child = spawn('zstd', ['-d', '-c', '-q'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve, reject) => {
    child.on('error', (err) => reject(new Error(`failed to run zstd: ${err.message}`, { cause: err })));
    child.on('close', (code) => resolve(code));
  });
  exited.catch(() => undefined);
  let feedError: unknown;
  const feeding = new Promise<void>((resolve) => {
    pipeline(Readable.from(src), child.stdin, (err) => {
      if (err && (err as NodeJS.ErrnoException).code !== 'EPIPE') feedError = err;
      resolve();
    });
  });
  let finished = false;
  try {
    for await (const chunk of child.stdout) yield chunk as Buffer;
    const code = await exited;
    await feeding;
    if (feedError) throw feedError;
    if (code !== 0) throw new Error(`zstd -d failed (exit ${code}): ${stderr.trim()}`);
    finished = true;
  } finally {
    if (!finished) {
      child.kill('SIGKILL');
      child.stdin.destroy();
    }
  }
}
