import { randomBytes } from 'node:crypto';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import type { Client } from '@connectrpc/connect';
import type { content, worker } from '@kiln/api';
import { KilnError, type Logger } from '@kiln/common';
import { chainOf, type CacheRecord } from './cache-config.js';
import type { LoadedCache } from './cache-remote.js';

type ContentClient = Client<typeof content.ContentService>;
type WorkerClient = Client<typeof worker.WorkerService>;

/** How long an import lease lives at most (it is deleted when the build ends). */
const LEASE_TTL_MS = 60 * 60 * 1000;

/**
 * The caches a build imports (`--cache-from`). A vertex whose key one of
 * them has is materialised on the worker from the record's layer blobs
 * (copied into the content store under a build lease, then applied by
 * chain with WorkerService.ImportLayers) instead of running.
 */
export class CacheImports {
  private readonly records = new Map<string, { source: LoadedCache; record: CacheRecord }>();
  /** Record keys by definition key. */
  private readonly byDefinition = new Map<string, string>();
  private lease: Promise<string> | undefined;

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
   * layers, or undefined when no cache has the key or materialising fails
   * (logged; the caller then runs the step).
   */
  async materialise(key: string, w: { id: string; client: WorkerClient }, buildId: string, signal: AbortSignal): Promise<string[] | undefined> {
    const hit = this.records.get(key);
    if (!hit || !this.content) return undefined;
    const refs: string[] = [];
    try {
      const store = await this.content();
      const lease = await this.leaseId(store);
      for (const top of hit.record.results) {
        const chain = chainOf(hit.source.config, top);
        for (const l of chain) await ensureBlob(store, lease, l, hit.source, signal);
        const layers = chain.map((l) => ({ digest: l.digest, size: BigInt(l.size), mediaType: l.mediaType, diffId: l.diffId, createdBy: l.createdBy ?? '' }));
        refs.push((await w.client.importLayers({ buildId, layers }, { signal })).ref);
      }
      return refs;
    } catch (err) {
      if (refs.length > 0) await w.client.release({ refs }).catch(() => undefined);
      if (signal.aborted) throw err;
      this.logger.warn({ err, key, cache: hit.source.where }, 'failed to import a cached step; running it');
      return undefined;
    }
  }

  /** Ends the build's lease on the imported blobs. */
  async close(): Promise<void> {
    const lease = this.lease;
    if (!lease || !this.content) return;
    const id = await lease.catch(() => undefined);
    if (id) await (await this.content()).deleteLease({ id }).catch((err: unknown) => this.logger.warn({ err }, 'failed to delete the cache import lease'));
  }

  private leaseId(store: ContentClient): Promise<string> {
    this.lease ??= store
      .createLease({ id: `cache-import-${randomBytes(8).toString('hex')}`, expiresAt: timestampFromMs(Date.now() + LEASE_TTL_MS), labels: { 'kiln.purpose': 'cache-import' } })
      .then((r) => r.lease!.id);
    return this.lease;
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
