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
      off = this.#fill(data, off);
      if (this.#len === this.max) yield* this.flush();
    }
  }

  /**
   * Adds `data` without a generator per call: each chunk that fills up is
   * pushed onto `full` (the caller yields them). For streams of many tiny
   * pieces, such as one line per entry of a 100k-file diff.
   */
  append(data: Uint8Array | string, full: Uint8Array[]): void {
    if (typeof data === 'string') {
      // Most lines fit: encoded straight into the buffer (at most 3 bytes per UTF-16 unit).
      if (data.length * 3 <= this.max - this.#len) {
        this.#len += this.#view().write(data, this.#len, 'utf8');
        if (this.#len === this.max) full.push(this.#take());
        return;
      }
      data = Buffer.from(data, 'utf8');
    }
    let off = 0;
    while (off < data.length) {
      off = this.#fill(data, off);
      if (this.#len === this.max) full.push(this.#take());
    }
  }

  /** Copies as much of `data` from `off` as the buffer holds; returns the new offset. */
  #fill(data: Uint8Array, off: number): number {
    const n = Math.min(this.max - this.#len, data.length - off);
    this.#buf.set(data.subarray(off, off + n), this.#len);
    this.#len += n;
    return off + n;
  }

  #bufView: Buffer | undefined;
  #view(): Buffer {
    return (this.#bufView ??= Buffer.from(this.#buf.buffer, this.#buf.byteOffset, this.#buf.byteLength));
  }

  #take(): Uint8Array {
    const out = this.#buf.slice(0, this.#len);
    this.#len = 0;
    return out;
  }

  /** Yields what is buffered (a copy), if anything. */
  *flush(): Generator<Uint8Array> {
    if (this.#len === 0) return;
    yield this.#buf.slice(0, this.#len);
    this.#len = 0;
  }
}
