import { randomBytes } from 'node:crypto';
import type { Client } from '@connectrpc/connect';
import type { content } from '@kiln/api';
import { KilnError } from '@kiln/common';
import type { WorkerHandle } from './workers.js';

type ContentClient = Client<typeof content.ContentService>;

/** A step's result moved to another worker: its refs there and the lease keeping their layer blobs. */
export interface PulledResult {
  refs: string[];
  /** Content-store lease holding every blob of the refs' chains (imported layers are read back from the store). */
  lease: string;
}

/**
 * Copies the result `refs` of `from` to `to` through the content tier, as
 * refs whose layers are the holder's own blobs (so an image built on either
 * worker has the same layer digests): the holder writes each ref's layer
 * chain into the store (WorkerService.GetLayers, under a lease), the target
 * applies it by chain id (WorkerService.ImportLayers, reusing chains it
 * has). The holder's refs are held while it reads them. The returned refs
 * carry one reference each for the caller (Release); on failure nothing is
 * left behind on either worker or in the store.
 */
export async function pullResult(
  from: WorkerHandle,
  to: WorkerHandle,
  refs: readonly string[],
  store: ContentClient,
  opts: { buildId: string; signal: AbortSignal },
): Promise<PulledResult> {
  const { signal } = opts;
  const tag = randomBytes(8).toString('hex');
  const hold = `pull-${tag}`;
  const lease = `kiln-pull-${to.id.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 64)}-${tag}`;
  const held = await from.client.retain({ refs: [...refs], owner: hold, ephemeral: true }, { signal });
  const imported: string[] = [];
  let leased = false;
  try {
    if (held.missing.length > 0) throw new KilnError('not_found', `worker "${from.id}" no longer has refs ${held.missing.join(', ')}`);
    await store.createLease({ id: lease, labels: { 'kiln.purpose': 'pulled-result', 'kiln.worker': to.id } }, { signal });
    leased = true;
    for (const ref of refs) {
      const { layers } = await from.client.getLayers({ ref, compression: 'gzip', ociMediaTypes: true, lease }, { signal });
      imported.push((await to.client.importLayers({ buildId: opts.buildId, layers: layers.map((l) => ({ digest: l.digest, size: l.size, mediaType: l.mediaType, diffId: l.diffId, createdBy: l.createdBy })) }, { signal })).ref);
    }
    return { refs: imported, lease };
  } catch (err) {
    if (imported.length > 0) await to.client.release({ refs: imported }).catch(() => undefined);
    if (leased) await store.deleteLease({ id: lease }).catch(() => undefined);
    throw err;
  } finally {
    await from.client.drop({ refs: [...refs], owner: hold }).catch(() => undefined);
  }
}
