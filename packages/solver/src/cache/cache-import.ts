import { randomBytes } from 'node:crypto';
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { Client } from '@connectrpc/connect';
import type { content, worker } from '@kiln/api';
import { KilnError, type Logger } from '@kiln/common';
import { chainOf, type CacheRecord } from './cache-config.js';
import type { LoadedCache } from './cache-remote.js';

type ContentClient = Client<typeof content.ContentService>;
type WorkerClient = Client<typeof worker.WorkerService>;

/**
 * The caches a build imports (`--cache-from`). A vertex whose key one of
 * them has is materialised on the worker from the record's layer blobs
 * (copied into the content store, then applied by chain with
 * WorkerService.ImportLayers) instead of running. The blobs of each
 * materialised result stay under a lease of their own, which the solver
 * cache keeps with the result's record (CacheRecord.lease) and deletes with
 * it: a later build may export the result, and the worker reads the
 * imported layers' blobs from the store for that.
 */
export class CacheImports {
  private readonly records = new Map<string, { source: LoadedCache; record: CacheRecord }>();
  /** Record keys by definition key. */
  private readonly byDefinition = new Map<string, string>();

  constructor(
    sources: readonly LoadedCache[],
    private readonly content: (() => Promise<ContentClient>) | undefined,
    private readonly logger: Logger,
  ) {
    for (const source of sources) {
      for (const record of source.config.records) {
        if (!this.records.has(record.key)) this.records.set(record.key, { source, record });
        if (record.definitionKey && !this.byDefinition.has(record.definitionKey)) this.byDefinition.set(record.definitionKey, record.key);
      }
    }
  }

  get size(): number {
    return this.records.size;
  }

  has(key: string): boolean {
    return this.records.has(key);
  }

  /** Whether any record carries a definition key (see CacheRecord.definitionKey). */
  get hasDefinitionKeys(): boolean {
    return this.byDefinition.size > 0;
  }

  /** The record key imported under `definitionKey`, with the record's parent keys. */
  byDefinitionKey(definitionKey: string): { key: string; parents: string[] } | undefined {
    const key = this.byDefinition.get(definitionKey);
    const hit = key === undefined ? undefined : this.records.get(key);
    return hit ? { key: hit.record.key, parents: hit.record.parents } : undefined;
  }

  /**
   * The refs (one per output) of `key` made on the worker from the imported
   * layers, and the lease holding their blobs (the caller owns it: kept with
   * the cache record, deleted with it); undefined when no cache has the key
   * or materialising fails (logged; the caller then runs the step).
   */
  async materialise(key: string, w: { id: string; client: WorkerClient }, buildId: string, signal: AbortSignal): Promise<{ refs: string[]; lease: string } | undefined> {
    const hit = this.records.get(key);
    if (!hit || !this.content) return undefined;
    const refs: string[] = [];
    let lease: string | undefined;
    let store: ContentClient | undefined;
    try {
      store = await this.content();
      lease = `kiln-import-${randomBytes(8).toString('hex')}`;
      await store.createLease({ id: lease, labels: { 'kiln.purpose': 'imported-result', 'kiln.worker': w.id } }, { signal });
      for (const top of hit.record.results) {
        const chain = chainOf(hit.source.config, top);
        for (const l of chain) await ensureBlob(store, lease, l, hit.source, signal);
        const layers = chain.map((l) => ({ digest: l.digest, size: BigInt(l.size), mediaType: l.mediaType, diffId: l.diffId, createdBy: l.createdBy ?? '' }));
        refs.push((await w.client.importLayers({ buildId, layers }, { signal })).ref);
      }
      return { refs, lease };
    } catch (err) {
      if (refs.length > 0) await w.client.release({ refs }).catch(() => undefined);
      if (lease && store) await store.deleteLease({ id: lease }).catch(() => undefined);
      if (signal.aborted) throw err;
      this.logger.warn({ err, key, cache: hit.source.where }, 'failed to import a cached step; running it');
      return undefined;
    }
  }
}

type WriteMessage = MessageInitShape<typeof content.WriteRequestSchema>;

/** Leases the blob and copies it from the cache source unless the store has it. */
async function ensureBlob(store: ContentClient, lease: string, l: { digest: string; size: number; mediaType: string; diffId: string }, source: LoadedCache, signal: AbortSignal): Promise<void> {
  await store.addLeaseResource({ lease, digest: l.digest }, { signal });
  try {
    await store.info({ digest: l.digest }, { signal });
    return;
  } catch (err) {
    if (!(err instanceof KilnError && err.code === 'not_found')) throw err;
  }
  async function* messages(): AsyncGenerator<WriteMessage> {
    yield {
      msg: {
        case: 'header',
        value: { ref: `cache-import-${l.digest.slice(7, 23)}-${randomBytes(4).toString('hex')}`, expectedDigest: l.digest, expectedSize: BigInt(l.size), lease, labels: { 'containerd.io/uncompressed': l.diffId } },
      },
    };
    for await (const chunk of source.fetch({ digest: l.digest, size: l.size, mediaType: l.mediaType }, signal)) yield { msg: { case: 'data', value: chunk } };
  }
  await store.write(messages(), { signal });
}
