import { findNatsServer, startNatsServer, type NatsServer } from '@kiln/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EventBus } from './bus.js';
import { connectNatsBus } from './nats/nats-bus.js';
import { runBusContract, waitUntil } from './testing/contract.js';

const binary = findNatsServer();
const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

describe.skipIf(!binary)('NATS bus (needs nats-server; skipped when it is not installed)', () => {
  let server: NatsServer;
  let plain: NatsServer;
  const open: EventBus[] = [];
  const connect = async (name = 'kiln-test') => {
    const bus = await connectNatsBus({ servers: server.url, name });
    open.push(bus);
    return bus;
  };

  beforeAll(async () => {
    [server, plain] = await Promise.all([startNatsServer({ jetstream: true }), startNatsServer({ jetstream: false })]);
  });

  afterAll(async () => {
    await Promise.all(open.map((b) => b.close()));
    await Promise.all([server?.stop(), plain?.stop()]);
  });

  runBusContract('nats', async () => {
    const bus = await connect();
    return { bus, cleanup: () => bus.close() };
  });

  describe('across connections', () => {
    it('delivers between two connections, in order', async () => {
      const [a, b] = await Promise.all([connect('a'), connect('b')]);
      const sub = b.subscribe('x.cross.*');
      await b.request('x.ping.none', enc(''), { timeoutMs: 100 }).catch(() => {}); // round trip: SUB is on the server
      for (let i = 0; i < 50; i++) await a.publish('x.cross.n', enc(String(i)));
      const got: string[] = [];
      for await (const m of sub) {
        got.push(dec(m.data));
        if (got.length === 50) break;
      }
      expect(got).toEqual(Array.from({ length: 50 }, (_, i) => String(i)));
      await Promise.all([a.close(), b.close()]);
    });

    it('sends what was published while the server was down, in order, once it is back', async () => {
      const own = await startNatsServer({ jetstream: false });
      let restarted: NatsServer | undefined;
      const buses: EventBus[] = [];
      try {
        const [a, b] = await Promise.all([
          connectNatsBus({ servers: own.url, name: 'outage-a' }),
          connectNatsBus({ servers: own.url, name: 'outage-b' }),
        ]);
        buses.push(a, b);
        const sub = b.subscribe('x.outage.*');
        await b.request('x.ping.none', enc(''), { timeoutMs: 100 }).catch(() => {}); // round trip: SUB is on the server
        await a.publish('x.outage.n', enc('before'));
        await own.stop();
        await new Promise((r) => setTimeout(r, 1500)); // both clients have seen the disconnect
        for (let i = 0; i < 5; i++) await a.publish('x.outage.n', enc(`during-${i}`));
        restarted = await startNatsServer({ jetstream: false, port: own.port });
        await a.publish('x.outage.n', enc('after'));
        const got: string[] = [];
        for await (const m of sub) {
          got.push(dec(m.data));
          if (got.length === 7) break;
        }
        expect(got).toEqual(['before', ...Array.from({ length: 5 }, (_, i) => `during-${i}`), 'after']);
      } finally {
        // Closed while their server is up: a close flushes to it.
        await Promise.all(buses.map((x) => x.close()));
        await restarted?.stop();
        await own.stop();
      }
    }, 30_000);

    it('keeps work items across clients: pushed by one that left, consumed by another', async () => {
      const producer = await connect('producer');
      const q = producer.workQueue('crossclient');
      for (const s of ['1', '2', '3']) await q.push(enc(s));
      await producer.close();
      const worker = await connect('worker');
      const got: string[] = [];
      const ac = new AbortController();
      const done = worker.workQueue('crossclient').consume(async (d) => void got.push(dec(d)), { signal: ac.signal });
      await waitUntil(() => got.length === 3, 5000, 'items');
      ac.abort();
      await done;
      expect(got.sort()).toEqual(['1', '2', '3']);
      await worker.close();
    });

    it('a stopped consumer strands no item (no wait for the ack timeout)', async () => {
      const a = await connect('a');
      const b = await connect('b');
      const qa = a.workQueue('handoff');
      const acA = new AbortController();
      const gotA: string[] = [];
      const doneA = qa.consume(async (d) => void gotA.push(dec(d)), { signal: acA.signal, concurrency: 3 });
      await new Promise((r) => setTimeout(r, 100)); // A has a pull waiting on the server
      acA.abort();
      await qa.push(enc('late')); // may land in A's pull while it stops
      await doneA;
      const gotB: string[] = [];
      const acB = new AbortController();
      const doneB = b.workQueue('handoff').consume(async (d) => void gotB.push(dec(d)), { signal: acB.signal });
      await waitUntil(() => gotA.length + gotB.length === 1, 5000, 'the item');
      acB.abort();
      await doneB;
      expect([...gotA, ...gotB]).toEqual(['late']);
      await Promise.all([a.close(), b.close()]);
    });
  });

  describe('failures', () => {
    it('work queues fail with "unavailable" when JetStream is off', async () => {
      const bus = await connectNatsBus({ servers: plain.url });
      open.push(bus);
      await expect(bus.workQueue('nojs').push(enc('x'))).rejects.toMatchObject({ code: 'unavailable', message: expect.stringMatching(/JetStream/) });
      await expect(bus.workQueue('nojs').consume(async () => {}, { signal: new AbortController().signal })).rejects.toMatchObject({
        code: 'unavailable',
      });
      await bus.close();
    });

    it('connecting to a dead address fails with "unavailable"', async () => {
      const stopped = await startNatsServer({ jetstream: false });
      await stopped.stop();
      await expect(connectNatsBus({ servers: stopped.url, connectTimeoutMs: 1000 })).rejects.toMatchObject({ code: 'unavailable' });
    });

    it('rejects bad options', async () => {
      await expect(connectNatsBus({ servers: [] })).rejects.toMatchObject({ code: 'invalid_argument', details: { field: 'servers' } });
    });
  });
});
