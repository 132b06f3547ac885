import type { Logger } from '@kiln/common';
import { findNatsServer, startNatsServer, type NatsServer } from '@kiln/testkit';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, nanos, StorageType } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EventBus, EventStream } from './bus.js';
import { connectNatsBus, type NatsBusOptions } from './nats/nats-bus.js';
import { waitUntil } from './testing/contract.js';

const binary = findNatsServer();
const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

/** A logger keeping warning messages (the outbox's overflow warning is part of the contract). */
function warnings(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const logger = {
    child: () => logger,
    warn: (_o: unknown, msg?: string) => void lines.push(String(msg)),
    info: () => {},
    debug: () => {},
    error: (_o: unknown, msg?: string) => void lines.push(String(msg)),
  } as unknown as Logger;
  return { logger, lines };
}

/** Reads `stream` on `filter` into an array until the returned stop() is called. */
async function reader(stream: EventStream, filter: string, name = 'reader'): Promise<{ got: string[]; seqs: number[]; stop(): Promise<void> }> {
  const got: string[] = [];
  const seqs: number[] = [];
  const ac = new AbortController();
  let ready!: () => void;
  const inPlace = new Promise<void>((r) => (ready = r));
  const done = stream.consume(filter, (m) => void (got.push(dec(m.data)), seqs.push(m.seq)), { signal: ac.signal, name, onReady: ready });
  await inPlace;
  return {
    got,
    seqs,
    stop: async () => {
      ac.abort();
      await done;
    },
  };
}

/**
 * The build event stream on a real nats-server with JetStream (-js): what
 * the solver and workers rely on to carry build progress across a NATS
 * outage (issue 15).
 */
describe.skipIf(!binary)('NATS event stream (JetStream; needs nats-server)', () => {
  let server: NatsServer;
  let plain: NatsServer;
  const open: EventBus[] = [];
  const bus = async (opts: Partial<NatsBusOptions> = {}, url = server.url) => {
    const b = await connectNatsBus({ servers: url, name: 'es-test', ...opts });
    open.push(b);
    return b;
  };

  beforeAll(async () => {
    [server, plain] = await Promise.all([startNatsServer({ jetstream: true }), startNatsServer({ jetstream: false })]);
  });

  afterAll(async () => {
    await Promise.all(open.map((b) => b.close()));
    await Promise.all([server?.stop(), plain?.stop()]);
  });

  it('creates the stream with file storage and the given limits, and updates changed limits', async () => {
    const b = await bus();
    await b.eventStream('ES_LIMITS', ['es.limits.>']).ensure({ maxAgeMs: 3_600_000, maxBytes: 64 * 1024 * 1024 });
    const nc = await connect({ servers: server.url });
    try {
      const jsm = await nc.jetstreamManager();
      let cfg = (await jsm.streams.info('ES_LIMITS')).config;
      expect(cfg).toMatchObject({ subjects: ['es.limits.>'], storage: StorageType.File, max_age: nanos(3_600_000), max_bytes: 64 * 1024 * 1024 });
      await b.eventStream('ES_LIMITS', ['es.limits.>']).ensure({ maxAgeMs: 60_000, maxBytes: 2 * 1024 * 1024 });
      cfg = (await jsm.streams.info('ES_LIMITS')).config;
      expect(cfg).toMatchObject({ max_age: nanos(60_000), max_bytes: 2 * 1024 * 1024 });
    } finally {
      await nc.close();
    }
  });

  it('fails setup clearly when the server runs without JetStream', async () => {
    const b = await bus({}, plain.url);
    await expect(b.eventStream('ES_NOJS', ['es.nojs.>']).ensure()).rejects.toMatchObject({ code: 'unavailable', message: expect.stringMatching(/JetStream is not enabled/) });
  });

  it('a reader on another connection gets every event in publish order', async () => {
    const [pub, sub] = await Promise.all([bus({ name: 'pub' }), bus({ name: 'sub' })]);
    await sub.eventStream('ES_ORDER', ['es.order.>']).ensure();
    const r = await reader(sub.eventStream('ES_ORDER', ['es.order.>']), 'es.order.*.log');
    const stream = pub.eventStream('ES_ORDER', ['es.order.>']);
    for (let i = 0; i < 500; i++) await stream.publish(`es.order.w${i % 3}.log`, enc(String(i)));
    await waitUntil(() => r.got.length === 500, 10_000, '500 events');
    expect(r.got).toEqual(Array.from({ length: 500 }, (_, i) => String(i)));
    await r.stop();
  });

  it('keeps what is published while NATS is down and stores it, in order, once it is back; the reader resumes without loss or repeats', async () => {
    const storeDir = mkdtempSync(join(tmpdir(), 'kiln-es-store-'));
    let own = await startNatsServer({ jetstream: true, storeDir });
    const buses: EventBus[] = [];
    try {
      const [pub, sub] = await Promise.all([connectNatsBus({ servers: own.url, name: 'pub' }), connectNatsBus({ servers: own.url, name: 'sub' })]);
      buses.push(pub, sub);
      await sub.eventStream('ES_OUTAGE', ['es.outage.>']).ensure();
      const r = await reader(sub.eventStream('ES_OUTAGE', ['es.outage.>']), 'es.outage.log');
      const stream = pub.eventStream('ES_OUTAGE', ['es.outage.>']);
      for (let i = 0; i < 10; i++) await stream.publish('es.outage.log', enc(`before-${i}`));
      await waitUntil(() => r.got.length === 10, 5000, 'events before the outage');
      await own.stop();
      await new Promise((res) => setTimeout(res, 1500)); // both clients have seen the disconnect
      for (let i = 0; i < 50; i++) await stream.publish('es.outage.log', enc(`during-${i}`));
      expect(await stream.flush(200)).toBe(false); // kept, not stored: nothing to store them in
      own = await startNatsServer({ jetstream: true, storeDir, port: own.port });
      for (let i = 0; i < 5; i++) await stream.publish('es.outage.log', enc(`after-${i}`));
      await stream.publish('es.outage.other', enc('not for this reader')); // stored after them: the reader's filter skips it
      // What the solver does before a build's done event: wait until the reader has what others kept.
      expect(await sub.eventStream('ES_OUTAGE', ['es.outage.>']).settle(20_000)).toBe(true);
      expect(r.got.length).toBe(65);
      expect(await stream.flush(1000)).toBe(true);
      await new Promise((res) => setTimeout(res, 300)); // no repeats trailing in
      expect(r.got).toEqual([
        ...Array.from({ length: 10 }, (_, i) => `before-${i}`),
        ...Array.from({ length: 50 }, (_, i) => `during-${i}`),
        ...Array.from({ length: 5 }, (_, i) => `after-${i}`),
      ]);
      expect(r.seqs).toEqual(Array.from({ length: 65 }, (_, i) => i + 1)); // the stream survived the restart (file storage)
      await r.stop();
    } finally {
      await Promise.all(buses.map((x) => x.close()));
      await own.stop();
      rmSync(storeDir, { recursive: true, force: true });
    }
  }, 60_000);

  it('settles at once while the connection was never broken', async () => {
    const b = await bus();
    const stream = b.eventStream('ES_SETTLE', ['es.settle.>']);
    await stream.ensure();
    const started = Date.now();
    expect(await stream.settle(5000)).toBe(true);
    expect(Date.now() - started).toBeLessThan(50);
  });

  it('drops the oldest events beyond its outbox bound while NATS is down, with a warning', async () => {
    const storeDir = mkdtempSync(join(tmpdir(), 'kiln-es-store-'));
    let own = await startNatsServer({ jetstream: true, storeDir });
    const { logger, lines } = warnings();
    const buses: EventBus[] = [];
    try {
      const pub = await connectNatsBus({ servers: own.url, name: 'pub', logger, eventOutboxMaxBytes: 4096 });
      buses.push(pub);
      const stream = pub.eventStream('ES_BOUND', ['es.bound.>']);
      await stream.ensure();
      await own.stop();
      await new Promise((res) => setTimeout(res, 1500));
      for (let i = 0; i < 20; i++) await stream.publish('es.bound.log', enc(`${String(i).padStart(2, '0')}:${'x'.repeat(509)}`)); // 512 bytes each
      expect(lines.some((l) => /outbox is full: dropping the oldest build events/.test(l))).toBe(true);
      own = await startNatsServer({ jetstream: true, storeDir, port: own.port });
      expect(await stream.flush(15_000)).toBe(true);
      const nc = await connect({ servers: own.url });
      try {
        const info = await (await nc.jetstreamManager()).streams.info('ES_BOUND');
        expect(info.state.messages).toBe(8); // 4096 / 512: the newest eight
        const last = await (await nc.jetstreamManager()).streams.getMessage('ES_BOUND', { last_by_subj: 'es.bound.log' });
        expect(dec(last.data).slice(0, 3)).toBe('19:');
      } finally {
        await nc.close();
      }
    } finally {
      await Promise.all(buses.map((x) => x.close()));
      await own.stop();
      rmSync(storeDir, { recursive: true, force: true });
    }
  }, 60_000);
});
