import type { DescService } from '@bufbuild/protobuf';
import { Code, ConnectError, createClient, type Client, type Interceptor, type Transport } from '@connectrpc/connect';
import { asKilnError, KilnError, TransportError } from './errors.js';
import { ERROR_METADATA_KEY, decodeWireError, encodeWireError, toConnectCode } from './wire.js';

/** Maps any thrown value to a ConnectError carrying the KilnError on metadata. */
export function toConnectError(err: unknown): ConnectError {
  if (err instanceof ConnectError && !(err.cause instanceof KilnError)) {
    return err;
  }
  const kiln = asKilnError(err);
  const headers = new Headers({ [ERROR_METADATA_KEY]: encodeWireError(kiln) });
  return new ConnectError(kiln.message, toConnectCode(kiln.code) as Code, headers, undefined, kiln);
}

/** Maps a ConnectError (from a client call) back to the KilnError it carried. */
export function fromConnectError(err: unknown): KilnError {
  if (err instanceof KilnError) return err;
  if (err instanceof ConnectError) {
    const encoded = err.metadata.get(ERROR_METADATA_KEY);
    // No Kiln metadata: the call failed in the transport (refused, reset, stream cut), not in a handler.
    if (!encoded) return new TransportError(decodeWireError(err.code, err.rawMessage).code, err.rawMessage);
    return decodeWireError(err.code, err.rawMessage, encoded);
  }
  return asKilnError(err);
}

/**
 * Server interceptor: every handler error leaves as a ConnectError with the
 * KilnError's code and details, so the next tier sees the same error.
 */
export const serverErrorInterceptor: Interceptor = (next) => async (req) => {
  try {
    const res = await next(req);
    if (!res.stream) return res;
    return { ...res, message: wrapStream(res.message) };
  } catch (err) {
    throw toConnectError(err);
  }
};

async function* wrapStream<T>(it: AsyncIterable<T>): AsyncIterable<T> {
  try {
    yield* it;
  } catch (err) {
    throw toConnectError(err);
  }
}

/**
 * A Connect client whose calls throw KilnErrors (the server's code and
 * details) instead of ConnectErrors. Interceptors cannot do this: the client
 * wraps whatever they throw back into a ConnectError.
 */
export function createKilnClient<T extends DescService>(service: T, transport: Transport): Client<T> {
  const client = createClient(service, transport) as Record<string, (...args: unknown[]) => unknown>;
  const wrapped: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(client)) {
    wrapped[name] = (...args: unknown[]) => {
      const result = fn(...args);
      if (result instanceof Promise) return result.catch((err: unknown) => { throw fromConnectError(err); });
      return unwrapStream(result as AsyncIterable<unknown>);
    };
  }
  return wrapped as Client<T>;
}

async function* unwrapStream<T>(it: AsyncIterable<T>): AsyncIterable<T> {
  try {
    yield* it;
  } catch (err) {
    throw fromConnectError(err);
  }
}

export { Code };
