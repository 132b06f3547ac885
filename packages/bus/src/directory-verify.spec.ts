import { events } from '@kiln/api';
import { describe, expect, it } from 'vitest';
import { publishEvent } from './events.js';
import { createServiceDirectory, type ServiceAnnouncement } from './directory.js';
import { createMemoryBus } from './memory/memory-bus.js';

describe('ServiceDirectory with verify', () => {
  it('lists only announcements whose check passed, logs the others, and checks each id/url once', async () => {
    const bus = createMemoryBus();
    const warnings: unknown[] = [];
    const logger = { child: () => logger, warn: (o: unknown) => warnings.push(o), debug: () => {}, info: () => {}, error: () => {} };
    const checked: string[] = [];
    const verify = async (a: ServiceAnnouncement) => {
      checked.push(a.id);
      return a.url === 'tcp://good:1' ? ({ ok: true } as const) : ({ ok: false, reason: 'no worker certificate' } as const);
    };
    const seen = createServiceDirectory(bus, { intervalMs: 50, logger: logger as never, verify });
    const announcer = createServiceDirectory(bus, { intervalMs: 50 });
    await announcer.announce({ tier: 'worker', id: 'good', url: 'tcp://good:1' });
    await announcer.announce({ tier: 'worker', id: 'rogue', url: 'tcp://rogue:1' });
    const first = await seen.waitFor('worker', { timeoutMs: 2000 });
    expect(first.id).toBe('good');
    await new Promise((r) => setTimeout(r, 300)); // several republishes
    expect(seen.list('worker').map((a) => a.id)).toEqual(['good']);
    expect(checked.filter((id) => id === 'good')).toHaveLength(1);
    expect(checked.filter((id) => id === 'rogue')).toHaveLength(1);
    expect(warnings).toEqual([expect.objectContaining({ id: 'rogue', reason: 'no worker certificate' })]);
    // A rogue "leaving" for the good id with another url does not drop the verified entry.
    await publishEvent(bus, 'kiln.services.worker', events.ServiceAnnouncementSchema, { tier: 'worker', id: 'good', url: 'tcp://rogue:1', leaving: true });
    await new Promise((r) => setTimeout(r, 20));
    expect(seen.list('worker').map((a) => a.id)).toEqual(['good']);
    await announcer.close();
    await seen.close();
    await bus.close();
  });
});
