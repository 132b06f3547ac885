import { KilnError, type ErrorCode, type ErrorDetails } from './errors.js';

/**
 * Wire form of a KilnError, independent of Connect so libraries need not
 * import it: the RPC edge puts `code` into the Connect code and the rest into
 * metadata (see `kiln-error-*` headers used by `@kiln/common` helpers).
 */
export interface WireError {
  code: ErrorCode;
  message: string;
  details: ErrorDetails;
}

/** Connect code names (kebab-less numeric values live in @connectrpc/connect). */
const connectCodes: Record<ErrorCode, number> = {
  canceled: 1,
  invalid_argument: 3,
  deadline_exceeded: 4,
  not_found: 5,
  already_exists: 6,
  permission_denied: 7,
  failed_precondition: 9,
  unimplemented: 12,
  internal: 13,
  unavailable: 14,
  unauthenticated: 16,
  source: 3,
  vertex: 2,
};

/** The numeric Connect `Code` for a Kiln error code. */
export function toConnectCode(code: ErrorCode): number {
  return connectCodes[code];
}

const byConnect: Record<number, ErrorCode> = {
  1: 'canceled', 2: 'internal', 3: 'invalid_argument', 4: 'deadline_exceeded', 5: 'not_found',
  6: 'already_exists', 7: 'permission_denied', 9: 'failed_precondition', 12: 'unimplemented',
  13: 'internal', 14: 'unavailable', 16: 'unauthenticated',
};

/** Header carrying the JSON-encoded WireError across a Connect hop. */
export const ERROR_METADATA_KEY = 'kiln-error-bin';

export function encodeWireError(err: KilnError): string {
  const wire: WireError = { code: err.code, message: err.message, details: err.details };
  return Buffer.from(JSON.stringify(wire)).toString('base64');
}

/** Rebuilds a KilnError from a Connect code, message and optional metadata value. */
export function decodeWireError(connectCode: number, rawMessage: string, encoded?: string | null): KilnError {
  if (encoded) {
    try {
      const wire = JSON.parse(Buffer.from(encoded, 'base64').toString('utf8')) as WireError;
      return new KilnError(wire.code, wire.message, wire.details ?? {});
    } catch {
      // fall through to the code-only form
    }
  }
  return new KilnError(byConnect[connectCode] ?? 'internal', rawMessage);
}
