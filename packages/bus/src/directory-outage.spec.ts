import { events } from '@kiln/api';
import { describe, expect, it } from 'vitest';
import { createServiceDirectory } from './directory.js';
import { publishEvent } from './events.js';
import { createMemoryBus } from './memory/memory-bus.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('ServiceDirectory across a bus outage', () => {
  it('keeps a process that has not re-announced yet when the first announcement after a silence arrives, and still expires it later', async () => {
    const bus = createMemoryBus();
    const seen = createServiceDirectory(bus, { intervalMs: 50 });
    const announce = (tier: string, id: string) => publishEvent(bus, `kiln.services.${tier}`, events.ServiceAnnouncementSchema, { tier, id, url: `tcp://${id}:1` });
    await announce('worker', 'w1');
    await announce('solver', 's1');
    await sleep(20);
    expect(seen.list('worker').map((a) => a.id)).toEqual(['w1']);
    await sleep(400); // nobody heard: the bus is down
    expect(seen.list('worker').map((a) => a.id)).toEqual(['w1']);
    await announce('solver', 's1'); // the solver is heard first after the outage
    await sleep(20);
    expect(seen.list('worker').map((a) => a.id)).toEqual(['w1']);
    // w1 never comes back while the solver goes on announcing: it expires after 3 intervals.
    for (let i = 0; i < 6; i++) {
      await sleep(50);
      await announce('solver', 's1');
    }
    await sleep(20);
    expect(seen.list('worker')).toEqual([]);
    await seen.close();
    await bus.close();
  });
});
