/**
 * Coalesces small pieces (tar headers, padding, small files) into chunks of at
 * most `max` bytes, so a stream of them becomes few, large RPC messages.
 */
export class Chunker {
  #buf: Uint8Array;
  #len = 0;
  constructor(readonly max: number) {
    this.#buf = new Uint8Array(max);
  }

  /** Adds `data`; yields every chunk that fills up. */
  *push(data: Uint8Array): Generator<Uint8Array> {
    let off = 0;
    while (off < data.length) {
      const n = Math.min(this.max - this.#len, data.length - off);
      this.#buf.set(data.subarray(off, off + n), this.#len);
      this.#len += n;
      off += n;
      if (this.#len === this.max) yield* this.flush();
    }
  }

  /** Yields what is buffered (a copy), if anything. */
  *flush(): Generator<Uint8Array> {
    if (this.#len === 0) return;
    yield this.#buf.slice(0, this.#len);
    this.#len = 0;
  }
}
