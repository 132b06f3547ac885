/**
 * A copy as a plain Uint8Array. Not `data.slice()`: on a Node Buffer (what
 * the NATS client hands out, and what callers often pass) `slice` is a view.
 */
export function copyBytes(data: Uint8Array): Uint8Array {
  return new Uint8Array(data);
}
