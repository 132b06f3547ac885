import { InvalidArgumentError } from '@kiln/common';

/**
 * A mistake on the command line: an unknown flag, a missing or malformed
 * value, a missing argument or a path that does not exist. `main` prints
 * `ERROR: <message>` and exits 2. Messages name the flag at fault, so the
 * message alone is printed (not `describeError`, which would repeat it).
 */
export class UsageError extends InvalidArgumentError {
  constructor(message: string, field?: string, options?: { cause?: unknown }) {
    super(message, field, options);
    this.name = 'UsageError';
  }
}
