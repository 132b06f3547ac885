import { findNatsServer, startKilnNats, type KilnNats, type KilnNatsUser } from '@kiln/testkit';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUILD_EVENT_STREAM } from './build-subjects.js';
import type { EventBus } from './bus.js';
import { connectNatsBus } from './nats/nats-bus.js';
import { waitUntil } from './testing/contract.js';

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

/**
 * The build event stream under deploy/nats/nats-server.conf's permissions:
 * the solver manages and reads KILN_EVENTS; a worker only stores its own
 * progress (acknowledgements on its role's inboxes) and can neither read
 * the stream nor manage it nor write a build's events.
 */
describe.skipIf(!findNatsServer())('build event stream permissions (deploy/nats/nats-server.conf, JetStream)', () => {
  let nats: KilnNats;
  const open: EventBus[] = [];
  const login = async (user: KilnNatsUser, inboxPrefix: string | null = `_INBOX.${user}`) => {
    const bus = await connectNatsBus({
      servers: nats.url,
      name: `auth-${user}`,
      auth: { user, password: nats.password(user) },
      tls: { ca: readFileSync(nats.certs.ca, 'utf8'), cert: readFileSync(nats.certs.clientCert, 'utf8'), key: readFileSync(nats.certs.clientKey, 'utf8') },
      ...(inboxPrefix ? { inboxPrefix } : {}),
    });
    open.push(bus);
    return bus;
  };
  const stream = (bus: EventBus) => bus.eventStream(BUILD_EVENT_STREAM.name, BUILD_EVENT_STREAM.subjects);

  beforeAll(async () => {
    nats = await startKilnNats();
  });

  afterAll(async () => {
    await Promise.all(open.map((b) => b.close()));
    await nats?.stop();
  });

  it("the solver makes the stream and reads a worker's progress; both get their acknowledgements", async () => {
    const [solver, worker] = await Promise.all([login('solver'), login('worker')]);
    await stream(solver).ensure({ maxAgeMs: 3_600_000, maxBytes: 16 * 1024 * 1024 });
    const got: string[] = [];
    const ac = new AbortController();
    let ready!: () => void;
    const inPlace = new Promise<void>((r) => (ready = r));
    const reading = stream(solver).consume('kiln.progress.*.*.*', (m) => void got.push(`${m.subject} ${dec(m.data)}`), { signal: ac.signal, name: 'solver-auth', onReady: ready });
    await inPlace;
    await stream(worker).publish('kiln.progress.w1.b1.log', enc('step output'));
    await stream(solver).publish('kiln.build.b1.vertex', enc('vertex'));
    expect(await stream(worker).flush(5000)).toBe(true);
    expect(await stream(solver).flush(5000)).toBe(true);
    await waitUntil(() => got.length === 1, 5000, "the worker's event");
    expect(got).toEqual(['kiln.progress.w1.b1.log step output']);
    ac.abort();
    await reading;
  }, 30_000);

  it('a worker cannot manage the stream, write a build event, or get acknowledgements outside its inboxes', async () => {
    const solver = await login('solver');
    await stream(solver).ensure();
    const worker = await login('worker');
    await expect(stream(worker).ensure()).rejects.toMatchObject({ code: expect.stringMatching(/deadline_exceeded|permission_denied|internal|unavailable/) });
    // Only the solver writes kiln.build.<id>.*: the server refuses the publish, so it is never stored.
    await stream(worker).publish('kiln.build.b2.done', enc('forged'));
    expect(await stream(worker).flush(3000)).toBe(false);
    // With the default inbox prefix the acknowledgements cannot reach the worker.
    const noInbox = await login('worker', null);
    await stream(noInbox).publish('kiln.progress.w1.b2.log', enc('x'));
    expect(await stream(noInbox).flush(3000)).toBe(false);
  }, 40_000);
});
