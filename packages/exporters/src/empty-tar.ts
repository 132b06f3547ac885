/** A valid tar with no entries: two 512-byte zero blocks. */
export async function* emptyTar(): AsyncIterable<Uint8Array> {
  yield new Uint8Array(1024);
}
