/*
 * tar-stream's typings build on streamx, which ships no types; these are the
 * members of streamx streams that this package uses.
 */

export interface StreamxWritable {
  readonly destroyed: boolean;
  write(chunk: Buffer): boolean;
  end(): void;
  destroy(err?: Error): void;
  on(event: 'drain' | 'close', fn: () => void): void;
  off(event: 'drain' | 'close', fn: () => void): void;
}

export interface StreamxReadable extends AsyncIterable<Buffer> {
  readonly destroyed: boolean;
  destroy(err?: Error): void;
}

/** Resolves on the next 'drain' (or 'close', so a destroyed stream never hangs the writer). */
export function drained(s: StreamxWritable): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      s.off('drain', done);
      s.off('close', done);
      resolve();
    };
    s.on('drain', done);
    s.on('close', done);
  });
}

/** Writes with backpressure. */
export async function writeChunk(s: StreamxWritable, chunk: Buffer): Promise<void> {
  if (!s.write(chunk)) await drained(s);
}
