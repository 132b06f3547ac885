/**
 * Kiln's one error taxonomy. Every error a user can see is a KilnError with a
 * stable `code`; the RPC edge maps codes to Connect codes and back (see
 * `toWireCode`/`fromWire`), so the code and context survive a hop between tiers.
 */
export type ErrorCode =
  | 'invalid_argument'
  | 'not_found'
  | 'already_exists'
  | 'failed_precondition'
  | 'permission_denied'
  | 'unauthenticated'
  | 'unavailable'
  | 'canceled'
  | 'deadline_exceeded'
  | 'unimplemented'
  | 'internal'
  | 'source'
  | 'vertex';

/** Structured context carried with an error across RPC hops. */
export interface ErrorDetails {
  /** Source file (e.g. "Dockerfile") and 1-based line the error points at. */
  file?: string;
  line?: number;
  /** Vertex (op) digest that failed. */
  digest?: string;
  /** Flag or option at fault, e.g. "--output". */
  field?: string;
  [key: string]: string | number | undefined;
}

export class KilnError extends Error {
  readonly code: ErrorCode;
  readonly details: ErrorDetails;
  constructor(code: ErrorCode, message: string, details: ErrorDetails = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KilnError';
    this.code = code;
    this.details = details;
  }
}

/** Bad input from a user or caller; `field` names the flag or option. */
export class InvalidArgumentError extends KilnError {
  constructor(message: string, field?: string, options?: { cause?: unknown }) {
    super('invalid_argument', message, field ? { field } : {}, options);
    this.name = 'InvalidArgumentError';
  }
}

export class NotFoundError extends KilnError {
  constructor(message: string, details: ErrorDetails = {}, options?: { cause?: unknown }) {
    super('not_found', message, details, options);
    this.name = 'NotFoundError';
  }
}

/** An error located in a build source, e.g. a Dockerfile line. */
export class SourceError extends KilnError {
  constructor(message: string, file: string, line: number, options?: { cause?: unknown }) {
    super('source', message, { file, line }, options);
    this.name = 'SourceError';
  }
}

/** A build step (vertex) failed. */
export class VertexError extends KilnError {
  constructor(message: string, digest: string, details: ErrorDetails = {}, options?: { cause?: unknown }) {
    super('vertex', message, { ...details, digest }, options);
    this.name = 'VertexError';
  }
}

export class UnavailableError extends KilnError {
  constructor(message: string, details: ErrorDetails = {}, options?: { cause?: unknown }) {
    super('unavailable', message, details, options);
    this.name = 'UnavailableError';
  }
}

export class CanceledError extends KilnError {
  constructor(message = 'operation canceled', options?: { cause?: unknown }) {
    super('canceled', message, {}, options);
    this.name = 'CanceledError';
  }
}

export class UnimplementedError extends KilnError {
  constructor(message: string, details: ErrorDetails = {}) {
    super('unimplemented', message, details);
    this.name = 'UnimplementedError';
  }
}

/**
 * An RPC that failed below the called handler: the connection was refused
 * or reset, or the HTTP/2 stream was cut (a tier restarted or died). It
 * carries no error of the handler (no Kiln error metadata came back), so
 * its code is only Connect's guess (often `canceled` or `unavailable`);
 * callers map it to a message naming the tier they called.
 */
export class TransportError extends KilnError {
  constructor(code: ErrorCode, message: string) {
    super(code, message);
    this.name = 'TransportError';
  }
}

export const errors = {
  KilnError,
  InvalidArgumentError,
  NotFoundError,
  SourceError,
  VertexError,
  UnavailableError,
  CanceledError,
  UnimplementedError,
  TransportError,
};

/** Wraps anything thrown into a KilnError, keeping KilnErrors as they are. */
export function asKilnError(err: unknown, fallback: ErrorCode = 'internal'): KilnError {
  if (err instanceof KilnError) return err;
  if (err instanceof Error) {
    if (err.name === 'AbortError') return new CanceledError(err.message, { cause: err });
    return new KilnError(fallback, err.message, {}, { cause: err });
  }
  return new KilnError(fallback, String(err));
}

/** A one-line "message (file:line)" rendering for users. */
export function describeError(err: KilnError): string {
  const { file, line, field, column, sourceLine } = err.details;
  const col = line && typeof column === 'number' ? `:${column}` : '';
  const where = file ? ` (${file}${line ? `:${line}${col}` : ''})` : field ? ` (${field})` : '';
  if (typeof sourceLine !== 'string' || !line) return `${err.message}${where}`;
  // The source line the error points at, with a caret under the column.
  const gutter = ` ${line} | `;
  const caret = typeof column === 'number' && column > 0 ? `\n${' '.repeat(gutter.length + column - 1)}^` : '';
  return `${err.message}${where}\n${gutter}${sourceLine}${caret}`;
}
