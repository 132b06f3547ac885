import { events } from '@kiln/api';
import { KilnError, NotFoundError } from '@kiln/common';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { EventBus, Message, Subscription } from '../bus.js';
import { createServiceDirectory, servicesSubject, type ServiceDirectory } from '../directory.js';
import { publishEvent, subscribeEvents } from '../events.js';

/** What `makeBus` gives each test: a fresh bus, and how to release it (and anything behind it). */
export interface BusFixture {
  bus: EventBus;
  cleanup(): Promise<void>;
}

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const dec = (b: Uint8Array): string => new TextDecoder().decode(b);

let counter = 0;
/** A subject/queue prefix unique to one test, so tests may share a server. */
function uniquePrefix(): string {
  counter++;
  return `c${process.pid}x${Date.now().toString(36)}x${counter}`;
}

/** Resolves when `check` returns true; fails after `timeoutMs`. */
export async function waitUntil(check: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Reads `n` messages from `sub`, failing after `timeoutMs`. Leaves the subscription open. */
export async function take(sub: Subscription, n: number, timeoutMs = 5000): Promise<Message[]> {
  const it = sub[Symbol.asyncIterator]();
  const out: Message[] = [];
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms with ${out.length}/${n} messages`)), timeoutMs);
  });
  try {
    while (out.length < n) {
      const r = await Promise.race([it.next(), timeout]);
      if (r.done) throw new Error(`subscription ended after ${out.length}/${n} messages`);
      out.push(r.value);
    }
  } finally {
    clearTimeout(timer);
  }
  return out;
}

async function expectKilnError(p: Promise<unknown>, code: string): Promise<KilnError> {
  const err = await p.then(
    () => {
      throw new Error(`expected a KilnError ${code}, got success`);
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(KilnError);
  expect((err as KilnError).code).toBe(code);
  return err as KilnError;
}

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Declares the EventBus contract as vitest suites. Every backend runs it:
 * `runBusContract('memory', async () => { const bus = createMemoryBus(); return { bus, cleanup: () => bus.close() }; })`.
 * `makeBus` is called once per test; tests use unique subjects and queue
 * names, so buses from one `makeBus` may share a server.
 */
export function runBusContract(name: string, makeBus: () => Promise<BusFixture>): void {
  describe(`EventBus contract: ${name}`, () => {
    let fixture: BusFixture;
    let bus: EventBus;
    let p: string;

    beforeEach(async () => {
      fixture = await makeBus();
      bus = fixture.bus;
      p = uniquePrefix();
    });

    afterEach(async () => {
      await fixture.cleanup();
    });

    describe('publish/subscribe', () => {
      it('delivers on the exact subject only', async () => {
        const sub = bus.subscribe(`${p}.a`);
        await bus.publish(`${p}.b`, enc('other'));
        await bus.publish(`${p}.a.x`, enc('deeper'));
        await bus.publish(`${p}.a`, enc('hit'));
        const [m] = await take(sub, 1);
        expect(m?.subject).toBe(`${p}.a`);
        expect(dec(m!.data)).toBe('hit');
        expect(m?.reply).toBeUndefined();
        sub.unsubscribe();
      });

      it('"*" matches exactly one token', async () => {
        const sub = bus.subscribe(`${p}.*.end`);
        for (const s of [`${p}.end`, `${p}.x.end`, `${p}.x.y.end`, `${p}.y.end`, `${p}.x.endx`]) await bus.publish(s, enc(s));
        await bus.publish(`${p}.last.end`, enc('sentinel'));
        const got = await take(sub, 3);
        expect(got.map((m) => m.subject)).toEqual([`${p}.x.end`, `${p}.y.end`, `${p}.last.end`]);
        sub.unsubscribe();
      });

      it('">" matches one or more tail tokens', async () => {
        const sub = bus.subscribe(`${p}.>`);
        const other = bus.subscribe(`${p}.a.>`);
        for (const s of [p, `${p}.a`, `${p}.a.b.c`, `${p}x.a`]) await bus.publish(s, enc(s));
        const got = await take(sub, 2);
        expect(got.map((m) => m.subject)).toEqual([`${p}.a`, `${p}.a.b.c`]);
        const got2 = await take(other, 1);
        expect(got2.map((m) => m.subject)).toEqual([`${p}.a.b.c`]);
        sub.unsubscribe();
        other.unsubscribe();
      });

      it('delivers in publish order to every subscriber', async () => {
        const a = bus.subscribe(`${p}.seq`);
        const b = bus.subscribe(`${p}.*`);
        const n = 300;
        for (let i = 0; i < n; i++) await bus.publish(`${p}.seq`, enc(String(i)));
        const expected = Array.from({ length: n }, (_, i) => String(i));
        expect((await take(a, n)).map((m) => dec(m.data))).toEqual(expected);
        expect((await take(b, n)).map((m) => dec(m.data))).toEqual(expected);
        a.unsubscribe();
        b.unsubscribe();
      });

      it('gives each receiver its own copy of the data', async () => {
        const sub = bus.subscribe(`${p}.copy`);
        const data = enc('abc');
        const buf = Buffer.from('def'); // Buffer#slice is a view: a bus must really copy
        await bus.publish(`${p}.copy`, data);
        await bus.publish(`${p}.copy`, buf);
        data[0] = 0x7a; // the publisher reuses its buffers
        buf[0] = 0x7a;
        const got = await take(sub, 2);
        expect(got.map((m) => dec(m.data))).toEqual(['abc', 'def']);
        for (const m of got) expect(m.data.constructor).toBe(Uint8Array);
        sub.unsubscribe();
      });

      it('unsubscribe() ends the iteration and stops delivery', async () => {
        const sub = bus.subscribe(`${p}.u`);
        const watcher = bus.subscribe(`${p}.u`);
        await bus.publish(`${p}.u`, enc('1'));
        expect((await take(sub, 1)).map((m) => dec(m.data))).toEqual(['1']);
        sub.unsubscribe();
        sub.unsubscribe(); // idempotent
        await bus.publish(`${p}.u`, enc('2'));
        await take(watcher, 2); // '2' went out and reached the other subscriber
        const r = await sub[Symbol.asyncIterator]().next();
        expect(r.done).toBe(true);
        watcher.unsubscribe();
      });

      it('aborting the signal ends a for-await loop', async () => {
        const ac = new AbortController();
        const sub = bus.subscribe(`${p}.abort`, { signal: ac.signal });
        const seen: string[] = [];
        const loop = (async () => {
          for await (const m of sub) {
            seen.push(dec(m.data));
            if (seen.length === 1) ac.abort();
          }
        })();
        await bus.publish(`${p}.abort`, enc('one'));
        await loop;
        expect(seen).toEqual(['one']);
        // An already aborted signal gives an ended subscription.
        const dead = bus.subscribe(`${p}.abort`, { signal: ac.signal });
        expect((await dead[Symbol.asyncIterator]().next()).done).toBe(true);
      });

      it('leaving a for-await loop early unsubscribes', async () => {
        const sub = bus.subscribe(`${p}.brk`);
        await bus.publish(`${p}.brk`, enc('x'));
        for await (const m of sub) {
          expect(dec(m.data)).toBe('x');
          break;
        }
        // Nobody listens any more: a request finds no responders.
        await expectKilnError(bus.request(`${p}.brk`, enc('?'), { timeoutMs: 2000 }), 'unavailable');
      });

      it('queue groups deliver each message to one member', async () => {
        const a = bus.subscribe(`${p}.work`, { queue: 'g' });
        const b = bus.subscribe(`${p}.work`, { queue: 'g' });
        const all = bus.subscribe(`${p}.work`);
        const counts = { a: 0, b: 0 };
        const drain = async (sub: Subscription, key: 'a' | 'b') => {
          for await (const _ of sub) counts[key]++;
        };
        const loops = [drain(a, 'a'), drain(b, 'b')];
        const n = 40;
        for (let i = 0; i < n; i++) await bus.publish(`${p}.work`, enc(String(i)));
        await take(all, n); // every message went out
        await waitUntil(() => counts.a + counts.b >= n, 5000, 'queue deliveries');
        await delay(50);
        expect(counts.a + counts.b).toBe(n);
        a.unsubscribe();
        b.unsubscribe();
        all.unsubscribe();
        await Promise.all(loops);
      });

      it('rejects bad subjects', async () => {
        await expect(bus.publish(`${p}.*`, enc('x'))).rejects.toMatchObject({ code: 'invalid_argument', details: { field: 'subject' } });
        await expect(bus.publish(`${p}.>`, enc('x'))).rejects.toMatchObject({ code: 'invalid_argument' });
        await expect(bus.publish('', enc('x'))).rejects.toMatchObject({ code: 'invalid_argument' });
        await expect(bus.publish(`${p}..a`, enc('x'))).rejects.toMatchObject({ code: 'invalid_argument' });
        await expect(bus.publish(`${p}.a b`, enc('x'))).rejects.toMatchObject({ code: 'invalid_argument' });
        expect(() => bus.subscribe(`${p}.>.a`)).toThrow(KilnError);
        expect(() => bus.subscribe(`${p}.a*`)).toThrow(KilnError);
        expect(() => bus.subscribe(`${p}.`)).toThrow(KilnError);
        expect(() => bus.subscribe(`${p}.a`, { queue: 'bad queue' })).toThrow(KilnError);
      });

      it('typed helpers encode and decode protobuf events', async () => {
        const sub = subscribeEvents(bus, `${p}.build.*`, events.BuildEventSchema);
        const bad: string[] = [];
        const sub2 = subscribeEvents(bus, `${p}.build.*`, events.BuildEventSchema, { onDecodeError: (_e, s) => bad.push(s) });
        await bus.publish(`${p}.build.garbage`, new Uint8Array([0xff, 0xff, 0xff]));
        await publishEvent(bus, `${p}.build.log`, events.BuildEventSchema, {
          buildId: 'b1',
          event: { case: 'log', value: { vertex: 'sha256:abc', stream: 1, msg: enc('hello') } },
        });
        for (const s of [sub, sub2]) {
          for await (const { subject, message } of s) {
            expect(subject).toBe(`${p}.build.log`);
            expect(message.buildId).toBe('b1');
            expect(message.event.case).toBe('log');
            if (message.event.case === 'log') expect(dec(message.event.value.msg)).toBe('hello');
            break;
          }
        }
        expect(bad).toEqual([`${p}.build.garbage`]);
      });
    });

    describe('request/reply', () => {
      it('serve answers requests, with the concrete subject', async () => {
        const svc = bus.serve(`${p}.echo.*`, async (data, subject) => enc(`${subject}:${dec(data)}`));
        const out = await bus.request(`${p}.echo.x`, enc('hi'), { timeoutMs: 2000 });
        expect(dec(out)).toBe(`${p}.echo.x:hi`);
        await svc.stop();
        await svc.stop(); // idempotent
      });

      it('a plain subscriber can reply', async () => {
        const sub = bus.subscribe(`${p}.raw`);
        const loop = (async () => {
          for await (const m of sub) await m.reply?.(enc(`re:${dec(m.data)}`));
        })();
        expect(dec(await bus.request(`${p}.raw`, enc('q'), { timeoutMs: 2000 }))).toBe('re:q');
        sub.unsubscribe();
        await loop;
      });

      it('fails fast with "unavailable" when nobody listens', async () => {
        const start = Date.now();
        const err = await expectKilnError(bus.request(`${p}.nobody`, enc('x'), { timeoutMs: 5000 }), 'unavailable');
        expect(Date.now() - start).toBeLessThan(1000);
        expect(err.message).toMatch(/no responders/);
      });

      it('times out with "deadline_exceeded" when nobody answers', async () => {
        const sub = bus.subscribe(`${p}.silent`); // listens, never replies
        await expectKilnError(bus.request(`${p}.silent`, enc('x'), { timeoutMs: 100 }), 'deadline_exceeded');
        sub.unsubscribe();
      });

      it('rejects with CanceledError when the signal aborts', async () => {
        const sub = bus.subscribe(`${p}.slow`);
        const ac = new AbortController();
        const req = bus.request(`${p}.slow`, enc('x'), { timeoutMs: 5000, signal: ac.signal });
        setTimeout(() => ac.abort(), 20);
        await expectKilnError(req, 'canceled');
        await expectKilnError(bus.request(`${p}.slow`, enc('x'), { signal: ac.signal }), 'canceled');
        sub.unsubscribe();
      });

      it('carries a handler error back to the requester', async () => {
        const svc = bus.serve(`${p}.fail`, async (data) => {
          if (dec(data) === 'boom') throw new Error('plain failure');
          throw new NotFoundError('failed to find thing', { digest: 'sha256:1' });
        });
        const err = await expectKilnError(bus.request(`${p}.fail`, enc('x'), { timeoutMs: 2000 }), 'not_found');
        expect(err.message).toBe('failed to find thing');
        expect(err.details).toMatchObject({ digest: 'sha256:1' });
        const err2 = await expectKilnError(bus.request(`${p}.fail`, enc('boom'), { timeoutMs: 2000 }), 'internal');
        expect(err2.message).toMatch(/plain failure/);
        await svc.stop();
      });

      it('one server of a queue group answers each request', async () => {
        const calls = [0, 0, 0];
        const services = calls.map((_, i) =>
          bus.serve(`${p}.lb`, async () => {
            calls[i]!++;
            return enc(String(i));
          }, { queue: 'workers' }),
        );
        const n = 30;
        const replies = await Promise.all(Array.from({ length: n }, () => bus.request(`${p}.lb`, enc('x'), { timeoutMs: 2000 })));
        expect(replies).toHaveLength(n);
        await delay(50);
        expect(calls.reduce((a, b) => a + b, 0)).toBe(n);
        await Promise.all(services.map((s) => s.stop()));
      });

      it('handles requests concurrently', async () => {
        let running = 0;
        let peak = 0;
        const svc = bus.serve(`${p}.conc`, async () => {
          running++;
          peak = Math.max(peak, running);
          await delay(50);
          running--;
          return enc('ok');
        });
        await Promise.all(Array.from({ length: 5 }, () => bus.request(`${p}.conc`, enc('x'), { timeoutMs: 2000 })));
        expect(peak).toBeGreaterThan(1);
        await svc.stop();
      });

      it('stop() and abort end a service', async () => {
        const ac = new AbortController();
        const svc = bus.serve(`${p}.stop`, async () => enc('ok'), { signal: ac.signal });
        expect(dec(await bus.request(`${p}.stop`, enc('x'), { timeoutMs: 2000 }))).toBe('ok');
        ac.abort();
        await svc.stop();
        await expectKilnError(bus.request(`${p}.stop`, enc('x'), { timeoutMs: 2000 }), 'unavailable');
      });
    });

    describe('work queue', () => {
      it('delivers each item to exactly one of two consumers', async () => {
        const q = bus.workQueue(`${p}-wq`);
        const n = 20;
        for (let i = 0; i < n; i++) await q.push(enc(String(i)));
        const seen = new Map<string, number>();
        const byConsumer = [0, 0];
        const ac = new AbortController();
        const consumer = (k: number) =>
          q.consume(
            async (data) => {
              seen.set(dec(data), (seen.get(dec(data)) ?? 0) + 1);
              byConsumer[k]!++;
              await delay(20);
            },
            { signal: ac.signal, concurrency: 2 },
          );
        const running = [consumer(0), consumer(1)];
        await waitUntil(() => seen.size === n, 10_000, 'all items');
        await delay(100);
        ac.abort();
        await Promise.all(running);
        expect([...seen.keys()].sort()).toEqual(Array.from({ length: n }, (_, i) => String(i)).sort());
        expect([...seen.values()].every((c) => c === 1)).toBe(true);
        expect(byConsumer[0]).toBeGreaterThan(0);
        expect(byConsumer[1]).toBeGreaterThan(0);
      });

      it('redelivers an item whose handler threw', async () => {
        const q = bus.workQueue(`${p}-retry`);
        const attempts: number[] = [];
        const ac = new AbortController();
        const done = q.consume(
          async (data, { attempt }) => {
            expect(dec(data)).toBe('job');
            attempts.push(attempt);
            if (attempt === 1) throw new Error('transient');
          },
          { signal: ac.signal, redeliveryDelayMs: 20 },
        );
        await q.push(enc('job'));
        await waitUntil(() => attempts.length >= 2, 5000, 'redelivery');
        await delay(100);
        ac.abort();
        await done;
        expect(attempts).toEqual([1, 2]);
      });

      it('keeps items pushed before any consumer runs', async () => {
        const q = bus.workQueue(`${p}-durable`);
        const reused = Buffer.from('a');
        await q.push(reused);
        reused[0] = 0x7a;
        await q.push(enc('b'));
        await q.push(enc('c'));
        await delay(50);
        const got: string[] = [];
        const ac = new AbortController();
        const done = bus.workQueue(`${p}-durable`).consume(async (d) => void got.push(dec(d)), { signal: ac.signal });
        await waitUntil(() => got.length === 3, 5000, 'stored items');
        ac.abort();
        await done;
        expect(got.sort()).toEqual(['a', 'b', 'c']);
      });

      it('consume() resolves after abort once running handlers finish', async () => {
        const q = bus.workQueue(`${p}-stop`);
        const ac = new AbortController();
        const log: string[] = [];
        const done = q
          .consume(
            async () => {
              log.push('start');
              ac.abort();
              await delay(50);
              log.push('end');
            },
            { signal: ac.signal, concurrency: 4 },
          )
          .then(() => log.push('resolved'));
        await q.push(enc('x'));
        await done;
        expect(log).toEqual(['start', 'end', 'resolved']);
        // The finished item is gone; a new consumer gets only new items.
        const later: string[] = [];
        const ac2 = new AbortController();
        const done2 = q.consume(async (d) => void later.push(dec(d)), { signal: ac2.signal });
        await q.push(enc('y'));
        await waitUntil(() => later.length === 1, 5000, 'new item');
        await delay(50);
        ac2.abort();
        await done2;
        expect(later).toEqual(['y']);
      });

      it('rejects bad names and options', async () => {
        expect(() => bus.workQueue('a.b')).toThrow(KilnError);
        expect(() => bus.workQueue('')).toThrow(KilnError);
        const q = bus.workQueue(`${p}-opts`);
        await expect(q.consume(async () => {}, {} as never)).rejects.toMatchObject({ code: 'invalid_argument', details: { field: 'signal' } });
        await expect(q.consume(async () => {}, { signal: new AbortController().signal, concurrency: 0 })).rejects.toMatchObject({
          code: 'invalid_argument',
          details: { field: 'concurrency' },
        });
      });
    });

    describe('event stream', () => {
      it('delivers what is stored after the reader is in place, in order, and only on its filter', async () => {
        const stream = bus.eventStream(`S${p}`, [`${p}.ev.>`]);
        await stream.ensure({ maxAgeMs: 60_000, maxBytes: 8 * 1024 * 1024 });
        const got: string[] = [];
        const seqs: number[] = [];
        const ac = new AbortController();
        let ready!: () => void;
        const inPlace = new Promise<void>((r) => (ready = r));
        const reading = stream.consume(`${p}.ev.a.*`, (m) => void (got.push(`${m.subject.slice(p.length)}=${dec(m.data)}`), seqs.push(m.seq)), { signal: ac.signal, name: 'contract', onReady: ready });
        await inPlace;
        for (let i = 0; i < 20; i++) await stream.publish(i % 5 === 4 ? `${p}.ev.b.log` : `${p}.ev.a.log`, enc(String(i)));
        await waitUntil(() => got.length === 16, 5000, 'events');
        expect(got).toEqual([...Array(20).keys()].filter((i) => i % 5 !== 4).map((i) => `.ev.a.log=${i}`));
        expect([...seqs].sort((x, y) => x - y)).toEqual(seqs);
        expect(await stream.flush(1000)).toBe(true);
        ac.abort();
        await reading;
      });

      it('refuses a subject the stream does not store, and bad names', async () => {
        const stream = bus.eventStream(`S${p}`, [`${p}.ev.>`]);
        await expect(stream.publish(`${p}.other`, enc('x'))).rejects.toMatchObject({ code: 'invalid_argument', details: { field: 'subject' } });
        expect(() => bus.eventStream('bad.name', [`${p}.ev.>`])).toThrow(/name/);
        expect(() => bus.eventStream(`T${p}`, [])).toThrow(/subject/);
        await expect(stream.ensure({ maxAgeMs: 10 })).rejects.toMatchObject({ code: 'invalid_argument', details: { field: 'maxAgeMs' } });
      });
    });

    describe('lifecycle', () => {
      it('close() ends subscriptions and later calls fail with "unavailable"', async () => {
        const sub = bus.subscribe(`${p}.life`);
        const next = sub[Symbol.asyncIterator]().next();
        await bus.close();
        expect((await next).done).toBe(true);
        await expect(bus.closed()).resolves.toBeUndefined();
        await expectKilnError(bus.publish(`${p}.life`, enc('x')), 'unavailable');
        expect(() => bus.subscribe(`${p}.life`)).toThrow(KilnError);
        await expectKilnError(bus.request(`${p}.life`, enc('x')), 'unavailable');
        await expectKilnError(bus.workQueue(`${p}-life`).push(enc('x')), 'unavailable');
        await bus.close(); // idempotent
        await bus[Symbol.asyncDispose]();
      });

      it('close() stops running consumers', async () => {
        const q = bus.workQueue(`${p}-close`);
        const done = q.consume(async () => {}, { signal: new AbortController().signal });
        await q.push(enc('x'));
        await bus.close();
        await done;
      });
    });

    describe('ServiceDirectory', () => {
      let dirs: ServiceDirectory[] = [];
      const directory = (intervalMs = 50) => {
        const d = createServiceDirectory(bus, { intervalMs });
        dirs.push(d);
        return d;
      };
      afterEach(async () => {
        await Promise.all(dirs.map((d) => d.close()));
        dirs = [];
      });

      it('announce() makes an entry that list() and waitFor() return', async () => {
        const dir = directory();
        const tier = `${p}-worker`;
        const waiting = dir.waitFor(tier, { timeoutMs: 5000 });
        const a = await dir.announce({
          tier,
          id: 'w1',
          url: 'http://127.0.0.1:1234',
          platforms: [{ os: 'linux', architecture: 'amd64' }],
          labels: { zone: 'a' },
        });
        const found = await waiting;
        expect(found).toMatchObject({ tier, id: 'w1', url: 'http://127.0.0.1:1234', labels: { zone: 'a' }, leaving: false });
        expect(found.platforms.map((x) => `${x.os}/${x.architecture}`)).toEqual(['linux/amd64']);
        expect(found.time).toBeDefined();
        await dir.announce({ tier, id: 'w0', url: 'http://127.0.0.1:1235' });
        await waitUntil(() => dir.list(tier).length === 2, 5000, 'two entries');
        expect(dir.list(tier).map((x) => x.id)).toEqual(['w0', 'w1']);
        expect(dir.list(`${p}-other`)).toEqual([]);
        expect((await dir.waitFor(tier)).id).toBe('w0');
        await a.stop();
      });

      it('drops an entry at once when it leaves', async () => {
        const dir = directory();
        const tier = `${p}-solver`;
        const ac = new AbortController();
        const a = await dir.announce({ tier, id: 's1', url: 'http://s1' });
        await dir.announce({ tier, id: 's2', url: 'http://s2' }, { signal: ac.signal });
        await waitUntil(() => dir.list(tier).length === 2, 5000, 'two entries');
        await a.stop();
        await waitUntil(() => dir.list(tier).length === 1, 1000, 's1 leaving');
        expect(dir.list(tier).map((x) => x.id)).toEqual(['s2']);
        ac.abort();
        await waitUntil(() => dir.list(tier).length === 0, 1000, 's2 leaving');
      });

      it('keeps an entry alive by republishing and drops it after 3 silent intervals', async () => {
        const dir = directory(50);
        const tier = `${p}-cs`;
        const a = await dir.announce({ tier, id: 'live', url: 'http://live' });
        // An announcer that died without saying so: published once, never again.
        await publishEvent(bus, servicesSubject(tier), events.ServiceAnnouncementSchema, { tier, id: 'dead', url: 'http://dead' });
        await waitUntil(() => dir.list(tier).length === 2, 5000, 'two entries');
        await delay(300);
        expect(dir.list(tier).map((x) => x.id)).toEqual(['live']);
        await a.stop();
      });

      it('keeps its entries while it hears nobody (the bus is down), and ages them again once announcements resume', async () => {
        const dir = directory(50);
        const tier = `${p}-outage`;
        // Heard once, then silence from everyone: as during a NATS outage.
        await publishEvent(bus, servicesSubject(tier), events.ServiceAnnouncementSchema, { tier, id: 'quiet', url: 'http://quiet' });
        await waitUntil(() => dir.list(tier).length === 1, 5000, 'the entry');
        await delay(300);
        expect(dir.list(tier).map((x) => x.id)).toEqual(['quiet']);
        // Someone is heard again: the silent one is now known to be gone.
        const a = await dir.announce({ tier, id: 'live', url: 'http://live' });
        await delay(300);
        expect(dir.list(tier).map((x) => x.id)).toEqual(['live']);
        await a.stop();
      });

      it('a new directory finds existing services without waiting an interval', async () => {
        const tier = `${p}-fe`;
        const a = await directory(60_000).announce({ tier, id: 'f1', url: 'http://f1' });
        const late = directory(60_000);
        const found = await late.waitFor(tier, { timeoutMs: 2000 });
        expect(found.id).toBe('f1');
        await a.stop();
      });

      it('waitFor() fails with "unavailable" naming the tier, or on abort', async () => {
        const dir = directory();
        const tier = `${p}-ghost`;
        const err = await expectKilnError(dir.waitFor(tier, { timeoutMs: 100 }), 'unavailable');
        expect(err.message).toContain(tier);
        expect(err.details.tier).toBe(tier);
        const ac = new AbortController();
        const w = dir.waitFor(tier, { signal: ac.signal });
        ac.abort();
        await expectKilnError(w, 'canceled');
      });

      it('stops announcing when the bus closes', async () => {
        const dir = directory();
        await dir.announce({ tier: `${p}-gone`, id: 'g1', url: 'http://g1' });
        await bus.close();
        await delay(10);
        await expectKilnError(dir.announce({ tier: `${p}-gone`, id: 'g2', url: 'http://g2' }), 'unavailable');
        await expectKilnError(dir.waitFor(`${p}-gone`), 'unavailable');
      });

      it('rejects bad announcements', async () => {
        const dir = directory();
        await expect(dir.announce({ tier: 'a.b', id: 'x', url: 'u' })).rejects.toMatchObject({ code: 'invalid_argument', details: { field: 'tier' } });
        await expect(dir.announce({ tier: 't', id: '', url: 'u' })).rejects.toMatchObject({ code: 'invalid_argument', details: { field: 'id' } });
      });
    });
  });
}
