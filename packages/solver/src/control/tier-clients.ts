import { TransportError } from '@kiln/common';
import type { WorkerHandle, WorkerPool } from './workers.js';

/**
 * The solver's boundary with the tiers it calls. A call that fails in the
 * transport (the tier died or restarted: connection refused or reset, the
 * HTTP/2 stream cut with CANCEL) reaches the client as a `TransportError`
 * naming the tier, e.g. `worker "w1" connection lost: http/2 stream closed
 * with error code CANCEL`, with code `unavailable` (Connect's guess is
 * often `canceled`, which would read as if the user canceled). Calls the
 * solver itself aborted keep their error; handler errors pass unchanged.
 */
export function namedTierClient<C extends object>(client: C, tier: string): C {
  const wrapped: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(client as Record<string, (...args: unknown[]) => unknown>)) {
    if (typeof fn !== 'function') continue;
    wrapped[name] = (...args: unknown[]) => {
      const signal = callSignal(args[args.length - 1]);
      const result = fn(...args);
      if (result instanceof Promise) return result.catch((err: unknown) => { throw named(err, tier, signal); });
      return namedStream(result as AsyncIterable<unknown>, tier, signal);
    };
  }
  return wrapped as C;
}

/** The pool with each worker's client named `worker "<id>"` (see namedTierClient). */
export function namedWorkerPool(pool: WorkerPool): WorkerPool {
  const wrap = (w: WorkerHandle): WorkerHandle => ({ ...w, client: namedTierClient(w.client, `worker "${w.id}"`) });
  return {
    list: async () => (await pool.list()).map(wrap),
    get: async (id) => {
      const w = await pool.get(id);
      return w && wrap(w);
    },
  };
}

/** A lazily found tier client (frontend, exporters, content), named by `name` of the lookup's arguments. */
export function namedTier<A extends unknown[], C extends object>(find: (...args: A) => Promise<C>, name: (...args: A) => string): (...args: A) => Promise<C> {
  return async (...args: A) => namedTierClient(await find(...args), name(...args));
}

/** Whether an error is a transport failure (the called tier went away), as opposed to a handler's error. */
export function isConnectionLost(err: unknown): boolean {
  return err instanceof TransportError;
}

function named(err: unknown, tier: string, signal: AbortSignal | undefined): unknown {
  if (!(err instanceof TransportError) || signal?.aborted || err.message.startsWith(`${tier} `)) return err;
  if (err.code === 'deadline_exceeded') return new TransportError('deadline_exceeded', `${tier} did not answer in time: ${err.message}`);
  return new TransportError('unavailable', `${tier} connection lost: ${err.message}`);
}

async function* namedStream<T>(it: AsyncIterable<T>, tier: string, signal: AbortSignal | undefined): AsyncIterable<T> {
  try {
    yield* it;
  } catch (err) {
    throw named(err, tier, signal);
  }
}

function callSignal(last: unknown): AbortSignal | undefined {
  if (!last || typeof last !== 'object' || !('signal' in last)) return undefined;
  const s = (last as { signal?: unknown }).signal;
  return s instanceof AbortSignal ? s : undefined;
}
