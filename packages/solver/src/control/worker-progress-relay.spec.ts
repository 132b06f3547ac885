import { create, toBinary, type MessageInitShape } from '@bufbuild/protobuf';
import { events } from '@kiln/api';
import { createMemoryBus, workerProgressSubject } from '@kiln/bus';
import { silentLogger } from '@kiln/common';
import { describe, expect, it } from 'vitest';
import { WorkerProgressRelay } from './worker-progress-relay.js';

const line = (buildId: string, text: string): MessageInitShape<typeof events.BuildEventSchema> => ({
  buildId,
  event: { case: 'log', value: { vertex: 'sha256:v', stream: 1, msg: new TextEncoder().encode(text) } },
});

describe('WorkerProgressRelay', () => {
  it("takes a worker's progress only into a running build that worker runs", async () => {
    const bus = createMemoryBus();
    const got: string[] = [];
    const relay = new WorkerProgressRelay(
      bus.eventStream('KILN_EVENTS', ['kiln.progress.>']),
      (ev) => got.push(ev.event.case === 'log' ? new TextDecoder().decode(ev.event.value.msg) : String(ev.event.case)),
      silentLogger(),
    );
    const send = (subject: string, ev: MessageInitShape<typeof events.BuildEventSchema>) => bus.publish(subject, toBinary(events.BuildEventSchema, create(events.BuildEventSchema, ev)));
    await relay.reading;
    relay.allow('b1', 'host.lan-worker');

    await send(workerProgressSubject('host.lan-worker', 'b1', 'log'), line('b1', 'ok 1'));
    await send(workerProgressSubject('rogue', 'b1', 'log'), line('b1', 'from a worker not on the build'));
    await send(workerProgressSubject('host.lan-worker', 'b2', 'log'), line('b2', 'into a build that is not running'));
    await send(workerProgressSubject('host.lan-worker', 'b1', 'log'), line('b2', 'payload names another build'));
    await send(workerProgressSubject('host.lan-worker', 'b1', 'log'), { buildId: 'b1', event: { case: 'done', value: {} } });
    await send(workerProgressSubject('host.lan-worker', 'b1', 'status'), line('b1', 'a log on a status subject'));
    await bus.publish(workerProgressSubject('host.lan-worker', 'b1', 'log'), new Uint8Array([0xff, 0xff, 0xff]));
    await send(workerProgressSubject('host.lan-worker', 'b1', 'log'), line('b1', 'ok 2'));
    await new Promise((r) => setTimeout(r, 20));
    relay.end('b1');
    await send(workerProgressSubject('host.lan-worker', 'b1', 'log'), line('b1', 'after the build ended'));
    await new Promise((r) => setTimeout(r, 20));

    expect(got).toEqual(['ok 1', 'ok 2']);
    relay.close();
    await bus.close();
  });
});
