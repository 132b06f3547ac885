import { KilnError, type ErrorDetails } from '@kiln/common';
import { describeFsError } from '../fs/fs-util.js';

/**
 * An op step failed for a reason the user should read ("failed to copy /a:
 * no such file or directory"). The worker turns it into a VertexError
 * carrying the vertex digest.
 */
export class OpFailure extends Error {
  /** Extra context for the VertexError (e.g. `output`: the last lines a failed process printed). */
  readonly details: ErrorDetails;

  constructor(message: string, options?: { cause?: unknown; details?: ErrorDetails }) {
    super(message, options);
    this.name = 'OpFailure';
    this.details = options?.details ?? {};
  }

  /**
   * `prefix: reason` for `err`. Node errors are reduced to their errno text
   * so host paths do not leak into build output; UnimplementedError and
   * CanceledError pass through unchanged.
   */
  static wrap(prefix: string, err: unknown): Error {
    if (err instanceof KilnError && (err.code === 'unimplemented' || err.code === 'canceled')) return err;
    if (err instanceof Error && err.name === 'AbortError') return err;
    return new OpFailure(`${prefix}: ${reasonOf(err)}`, { cause: err });
  }
}

/** The user-facing reason of an error. */
export function reasonOf(err: unknown): string {
  if (err instanceof KilnError || err instanceof OpFailure) return err.message;
  const e = err as NodeJS.ErrnoException;
  // Errors from Node's fs calls have a syscall (and a host path in the message).
  if (e?.syscall) return describeFsError(e);
  return err instanceof Error ? err.message : String(err);
}
