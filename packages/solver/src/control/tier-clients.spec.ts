import { ConnectError, Code, type Client } from '@connectrpc/connect';
import { worker } from '@kiln/api';
import { fromConnectError, KilnError, TransportError } from '@kiln/common';
import { describe, expect, it } from 'vitest';
import { isConnectionLost, namedTierClient } from './tier-clients.js';

type WorkerClient = Client<typeof worker.WorkerService>;

/** A worker client whose describe() fails with `err` and whose getLayers stream fails after one message. */
function failing(err: unknown): WorkerClient {
  return {
    describe: async () => {
      throw err;
    },
    getLayers: async () => {
      throw err;
    },
    exportRef: async function* () {
      yield { data: new Uint8Array([1]) };
      throw err;
    },
  } as unknown as WorkerClient;
}

describe('namedTierClient', () => {
  // What a tier killed mid-call looks like on the client: a Connect error without Kiln metadata.
  const cut = () => fromConnectError(new ConnectError('http/2 stream closed with error code CANCEL (0x8)', Code.Canceled));

  it('names the tier of a call the transport lost, as unavailable', async () => {
    const err = (await namedTierClient(failing(cut()), 'worker "w1"').describe({}).catch((e: unknown) => e)) as KilnError;
    expect(err).toBeInstanceOf(TransportError);
    expect(isConnectionLost(err)).toBe(true);
    expect(err.code).toBe('unavailable');
    expect(err.message).toBe('worker "w1" connection lost: http/2 stream closed with error code CANCEL (0x8)');
  });

  it('names it in the middle of a stream too', async () => {
    const got: unknown[] = [];
    const err = await (async () => {
      for await (const m of namedTierClient(failing(cut()), 'exporters tier').exportRef({ ref: 'r' })) got.push(m);
    })().catch((e: unknown) => e as KilnError);
    expect(got).toHaveLength(1);
    expect((err as KilnError).message).toBe('exporters tier connection lost: http/2 stream closed with error code CANCEL (0x8)');
  });

  it('leaves handler errors, and calls the caller aborted, as they are', async () => {
    const handler = new KilnError('vertex', 'process "x" did not complete successfully: exit code: 3');
    expect(await namedTierClient(failing(handler), 'worker "w1"').describe({}).catch((e: unknown) => e)).toBe(handler);
    const ac = new AbortController();
    ac.abort();
    const own = cut();
    expect(await namedTierClient(failing(own), 'worker "w1"').describe({}, { signal: ac.signal }).catch((e: unknown) => e)).toBe(own);
    expect(isConnectionLost(handler)).toBe(false);
  });

  it('a Connect error carrying Kiln metadata is a handler error, one without is a transport error', () => {
    expect(cut()).toBeInstanceOf(TransportError);
    expect(cut().code).toBe('canceled');
  });
});
