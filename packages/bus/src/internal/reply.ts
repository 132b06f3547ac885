import { asKilnError, decodeWireError, encodeWireError, KilnError } from '@kiln/common';

/**
 * Header (NATS) or field (memory) that marks a reply as an error: its value is
 * the base64 JSON WireError from `@kiln/common`, so the requester rebuilds a
 * KilnError with the same code, message and details.
 */
export const ERROR_HEADER = 'Kiln-Error-Bin';

export function encodeHandlerError(err: unknown): string {
  return encodeWireError(asKilnError(err));
}

export function decodeHandlerError(encoded: string): KilnError {
  return decodeWireError(13, 'request handler failed', encoded);
}
