import { KilnError, UnavailableError } from '@kiln/common';
import { ErrorCode, NatsError } from 'nats';

/** Maps an error from the nats client to a KilnError for "failed to <what>". */
export function fromNatsError(err: unknown, what: string, details: Record<string, string> = {}): KilnError {
  if (err instanceof KilnError) return err;
  if (err instanceof NatsError) {
    switch (err.code) {
      case ErrorCode.NoResponders:
        return new UnavailableError(`failed to ${what}: no responders`, details, { cause: err });
      case ErrorCode.Timeout:
        return new KilnError('deadline_exceeded', `failed to ${what}: timed out`, details, { cause: err });
      case ErrorCode.ConnectionClosed:
      case ErrorCode.ConnectionDraining:
      case ErrorCode.Disconnect:
      case ErrorCode.ConnectionRefused:
      case ErrorCode.ConnectionTimeout:
        return new UnavailableError(`failed to ${what}: NATS connection ${err.message}`, details, { cause: err });
      default:
        break;
    }
  }
  const message = err instanceof Error ? err.message : String(err);
  return new KilnError('internal', `failed to ${what}: ${message}`, details, { cause: err });
}

/** True for the JetStream API's "not found" answers (stream or consumer missing). */
export function isNotFound(err: unknown): boolean {
  return err instanceof NatsError && (err.api_error?.code === 404 || err.code === '404');
}
