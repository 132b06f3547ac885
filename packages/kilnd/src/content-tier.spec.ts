import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '@kiln/common';
import { afterEach, describe, expect, it } from 'vitest';
import { openContentTier } from './content-tier.js';

async function* bytes(text: string) {
  yield new TextEncoder().encode(text);
}

describe('openContentTier', () => {
  const roots: string[] = [];
  afterEach(() => roots.splice(0).forEach((r) => rmSync(r, { recursive: true, force: true })));

  it('runs the configured gc policy in the background: unreferenced blobs go, leased ones stay', async () => {
    const root = mkdtempSync(join(tmpdir(), 'kilnd-gc-'));
    roots.push(root);
    const store = await openContentTier({ root, gc: { intervalMs: 150, keepDurationMs: 0 } }, silentLogger(), async () => {});
    try {
      const lease = await store.createLease('keep');
      const kept = await store.write({ ref: 'kept' , lease: lease.id }, bytes('kept'));
      const loose = await store.write({ ref: 'loose' }, bytes('loose'));
      const deadline = Date.now() + 5000;
      while ((await store.info(loose.digest).then(() => true, () => false)) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      await expect(store.info(loose.digest)).rejects.toThrow(/not found/i);
      await expect(store.info(kept.digest)).resolves.toMatchObject({ size: 4 });
    } finally {
      await store.close();
    }
  });

  it('starts no policy when gc is disabled', async () => {
    const root = mkdtempSync(join(tmpdir(), 'kilnd-gc-'));
    roots.push(root);
    const store = await openContentTier({ root, gc: undefined }, silentLogger(), async () => {});
    try {
      const loose = await store.write({ ref: 'loose' }, bytes('loose'));
      await new Promise((r) => setTimeout(r, 400));
      await expect(store.info(loose.digest)).resolves.toMatchObject({ size: 5 });
    } finally {
      await store.close();
    }
  });
});
