import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { MessageChannel } from 'node:worker_threads';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { CanceledError, KilnError, type Logger } from '@kiln/common';
import { comparedPaths, planTreeDiff, readPathsXattrs, readTreeXattrs, type LayerPart, type TreeXattrs } from '@kiln/snapshotter';
import { receiveBlob, type CompressPool } from './compress-pool.js';
import { leaseIfPresent, readBlob, UNCOMPRESSED_LABEL, writeBlob, type ContentClient } from './content-blobs.js';
import type { CachedLayer, LayerCache } from './layer-cache.js';
import type { BaseLayer, LineageSnapshotter } from './lineage.js';
import { compressionOfMediaType, layerMediaType, type LayerCompression } from './media-types.js';

/** What the layers of one request look like (options already validated and defaulted). */
export interface LayerRequest {
  compression: LayerCompression;
  /** Codec level, defaulted (see `compressionLevel`). */
  level: number;
  forceCompression: boolean;
  ociMediaTypes: boolean;
  sourceDateEpoch?: number;
  /** Content-store lease the blobs are added to ("" for none). */
  lease: string;
  signal?: AbortSignal;
}

/** One layer of a ref, as `Worker.getLayers` returns it. */
export interface LayerDescriptor {
  digest: string;
  size: number;
  mediaType: string;
  diffId: string;
  fromBase: boolean;
  createdBy?: string;
  /** Made here with file times clamped to the request's `sourceDateEpoch` (never base or imported layers). */
  timestampsRewritten: boolean;
  /** When its snapshot was made (ms since the epoch, the snapshotter's record), when known: the image history's time for it. */
  createdAtMs?: number;
}

export interface LayerMakerOptions {
  snapshots: LineageSnapshotter;
  content: ContentClient;
  pool: CompressPool;
  cache: LayerCache;
  /** Where blobs are staged before they go to the content store. */
  tmpDir: string;
  logger: Logger;
}

/**
 * Makes the layer blobs of a snapshot chain: base image layers as pulled
 * (their blob written to the content store again if it is gone), then one
 * diff per snapshot against its parent, compressed on the pool's threads.
 * A layer already made with the same options is reused once its blob is
 * leased and found in the store; concurrent requests for one layer make it
 * once.
 */
export class LayerMaker {
  private readonly inflight = new Map<string, Promise<CachedLayer>>();
  /**
   * Extended attributes of recently diffed snapshots, by id: a committed
   * snapshot never changes, and in a chain each one is the child of one
   * diff and the parent of the next, so it is read once, not twice.
   */
  private readonly xattrs = new Map<string, Promise<TreeXattrs>>();

  constructor(private readonly o: LayerMakerOptions) {}

  /** Stops the compression threads and removes staged files. */
  async close(): Promise<void> {
    this.o.cache.flush();
    await this.o.pool.close();
    await rm(this.o.tmpDir, { recursive: true, force: true });
  }

  /** The layers of the snapshot `top`, base first; empty diffs left out. */
  async layers(top: string, req: LayerRequest): Promise<LayerDescriptor[]> {
    const chain = this.o.snapshots.chain(top);
    // The pool bounds how many compress at once; order is the chain's.
    const all = await Promise.all(chain.map((id) => this.layerOf(id, req)));
    return all.filter((l): l is LayerDescriptor => l !== undefined);
  }

  private async layerOf(id: string, req: LayerRequest): Promise<LayerDescriptor | undefined> {
    const time = await this.o.snapshots.createdAt(id);
    const createdAt = time === undefined ? {} : { createdAtMs: time };
    const base = this.o.snapshots.base(id);
    if (base) return { ...(await this.baseLayer(base, req)), ...createdAt };
    const parent = this.o.snapshots.parentOf(id);
    const key = ['diff', id, parent ?? '', req.compression, req.level, req.sourceDateEpoch ?? ''].join('|');
    const made = await this.once(key, req, () => this.makeDiff(id, parent, req));
    if (made.empty) return undefined;
    const createdBy = this.o.snapshots.createdBy(id);
    return {
      digest: made.digest,
      size: made.size,
      mediaType: layerMediaType(req.compression, req.ociMediaTypes),
      diffId: made.diffId,
      fromBase: false,
      timestampsRewritten: req.sourceDateEpoch !== undefined,
      ...(createdBy ? { createdBy } : {}),
      ...createdAt,
    };
  }

  private async baseLayer(base: BaseLayer, req: LayerRequest): Promise<LayerDescriptor> {
    // Base and cache-imported layers keep their blobs (and file times) as they came.
    const origin = { timestampsRewritten: false, ...(base.imported ? { fromBase: false, ...(base.imported.createdBy ? { createdBy: base.imported.createdBy } : {}) } : { fromBase: true }) };
    const have = compressionOfMediaType(base.mediaType);
    if (req.forceCompression && have !== undefined && have !== req.compression) {
      const key = ['base', base.digest, req.compression, req.level].join('|');
      const made = await this.once(key, req, () => this.recompress(base, have, req));
      if (made.empty) throw new KilnError('internal', `recompressing base layer ${base.digest} gave no blob`);
      return { digest: made.digest, size: made.size, mediaType: layerMediaType(req.compression, req.ociMediaTypes), diffId: base.diffId, ...origin };
    }
    await this.ensureBase(base, req);
    return {
      digest: base.digest,
      size: base.size,
      mediaType: have === undefined ? base.mediaType : layerMediaType(have, req.ociMediaTypes),
      diffId: base.diffId,
      ...origin,
    };
  }

  /** The cached layer of `key` when its blob still exists, else made with `make` (once for concurrent callers). */
  private async once(key: string, req: LayerRequest, make: () => Promise<CachedLayer>): Promise<CachedLayer> {
    const cached = this.o.cache.get(key);
    if (cached) {
      if (cached.empty || (await leaseIfPresent(this.o.content, cached.digest, req.lease, req.signal))) return cached;
      this.o.cache.delete(key);
    }
    for (;;) {
      let p = this.inflight.get(key);
      if (!p) {
        p = make();
        this.inflight.set(key, p);
        const mine = p;
        p.then(
          (v) => this.o.cache.set(key, v),
          () => undefined,
        ).finally(() => {
          if (this.inflight.get(key) === mine) this.inflight.delete(key);
        });
      }
      try {
        const v = await p;
        if (!v.empty && req.lease) await this.o.content.addLeaseResource({ lease: req.lease, digest: v.digest }, { signal: req.signal });
        return v;
      } catch (err) {
        // Another caller's cancellation: try again with our own signal.
        const canceled = err instanceof CanceledError || (err instanceof Error && err.name === 'AbortError');
        if (req.signal?.aborted || !canceled) throw err;
        if (this.inflight.get(key) === p) this.inflight.delete(key);
      }
    }
  }

  private async makeDiff(id: string, parent: string | undefined, req: LayerRequest): Promise<CachedLayer> {
    const snaps = this.o.snapshots;
    const child = await snaps.view(id);
    const lower = parent === undefined ? undefined : await snaps.view(parent).catch(async (err: unknown) => {
      await child.release();
      throw err;
    });
    // The snapshot's own changes over exactly this parent (an overlay upper dir), when the
    // backend keeps them and no spliced-out snapshot lies between: the diff then walks only them.
    const own = lower === undefined ? undefined : await snaps.changes(id).catch(() => undefined);
    const changes = own?.parent === parent ? own : undefined;
    if (own && !changes) await own.release();
    try {
      let plan;
      if (changes && lower) {
        const compared = comparedPaths(lower.path, child.path, changes.path);
        const [parentXattrs, childXattrs] = await Promise.all([readPathsXattrs(lower.path, compared, req.signal), readTreeXattrs(changes.path, req.signal)]);
        plan = planTreeDiff(lower.path, child.path, { sourceDateEpoch: req.sourceDateEpoch, parentXattrs, childXattrs, changesDir: changes.path, signal: req.signal });
      } else {
        const [parentXattrs, childXattrs] = await Promise.all([lower ? this.xattrsOf(parent!, lower.path, req.signal) : undefined, this.xattrsOf(id, child.path, req.signal)]);
        plan = planTreeDiff(lower?.path, child.path, { sourceDateEpoch: req.sourceDateEpoch, parentXattrs, childXattrs, signal: req.signal });
      }
      if (plan.entries === 0) return { empty: true };
      return await this.compressAndStore(plan.parts, req);
    } finally {
      await changes?.release();
      await lower?.release();
      await child.release();
    }
  }

  /** The extended attributes of committed snapshot `id`, mounted at `dir` (read once while recent). */
  private async xattrsOf(id: string, dir: string, signal?: AbortSignal): Promise<TreeXattrs> {
    signal?.throwIfAborted();
    let p = this.xattrs.get(id);
    if (!p) {
      p = readTreeXattrs(dir);
      this.xattrs.set(id, p);
      p.catch(() => this.xattrs.delete(id));
      // A bound, not a policy: a chain's neighbours are read close together.
      if (this.xattrs.size > XATTR_CACHE_ENTRIES) this.xattrs.delete(this.xattrs.keys().next().value!);
    }
    return p;
  }

  /**
   * Compresses a tar on a pool thread and streams the blob into the content
   * store as it is made (one pass: no staged file to write and read back);
   * the store hashes what it receives, which gives the digest. The diff id is
   * known only at the end, so its label is added after the write.
   */
  private async compressAndStore(parts: LayerPart[], req: LayerRequest): Promise<CachedLayer> {
    const { port1, port2 } = new MessageChannel();
    const failed = new AbortController();
    const signal = req.signal ? AbortSignal.any([req.signal, failed.signal]) : failed.signal;
    const ref = `layer-${randomBytes(8).toString('hex')}`;
    let cause: unknown;
    const fail = (err: unknown): never => {
      // The first failure stops the other side; it is the one reported.
      if (cause === undefined) cause = err;
      failed.abort(err);
      throw err;
    };
    let written = false;
    try {
      const [made, stored] = await Promise.allSettled([
        this.o.pool.run({ parts, compression: req.compression, level: req.level, port: port2 }, signal).catch(fail),
        writeBlob(this.o.content, { ref, lease: req.lease }, receiveBlob(port1, signal), signal).catch(fail),
      ]).then((r) => {
        if (r[0].status === 'rejected' || r[1].status === 'rejected') throw cause;
        return [r[0].value, r[1].value] as const;
      });
      written = true;
      if (stored.size !== made.size) throw new KilnError('internal', `layer ${stored.digest}: the store received ${stored.size} bytes, the thread made ${made.size}`);
      if (req.compression !== 'uncompressed') await this.o.content.updateLabels({ digest: stored.digest, labels: { [UNCOMPRESSED_LABEL]: made.diffId } }, { signal: req.signal });
      this.o.logger.debug({ digest: stored.digest, diffId: made.diffId, size: stored.size, compression: req.compression }, 'made layer');
      return { empty: false, digest: stored.digest, size: stored.size, diffId: made.diffId };
    } finally {
      port1.close();
      // A write cut short leaves an ingest the store would keep for a resume that never comes.
      if (!written) await this.o.content.abort({ ref }).catch(() => undefined);
    }
  }

  /** Makes sure the base layer's blob is in the store (and leased), fetching it again when it is gone. */
  private async ensureBase(base: BaseLayer, req: LayerRequest): Promise<void> {
    if (await leaseIfPresent(this.o.content, base.digest, req.lease, req.signal)) return;
    await writeBlob(
      this.o.content,
      { ref: `base-${base.digest.slice(7, 23)}-${randomBytes(4).toString('hex')}`, digest: base.digest, size: base.size, lease: req.lease },
      base.fetch(req.signal),
      req.signal,
    );
  }

  /** The base layer's tar in another compression; its diff id must stay the same. */
  private async recompress(base: BaseLayer, have: LayerCompression, req: LayerRequest): Promise<CachedLayer> {
    await this.ensureBase(base, req);
    await mkdir(this.o.tmpDir, { recursive: true });
    const tarPath = path.join(this.o.tmpDir, `tar-${randomBytes(8).toString('hex')}`);
    try {
      await pipeline(Readable.from(decompress(readBlob(this.o.content, base.digest, req.signal), have)), createWriteStream(tarPath, { mode: 0o600 }), {
        signal: req.signal,
      });
      const size = (await stat(tarPath)).size;
      const made = await this.compressAndStore([{ kind: 'file', path: tarPath, size }], req);
      if (!made.empty && made.diffId !== base.diffId) {
        throw new KilnError('internal', `base layer ${base.digest} decompresses to ${made.diffId}, not its diff id ${base.diffId}`);
      }
      return made;
    } finally {
      await rm(tarPath, { force: true });
    }
  }
}

const XATTR_CACHE_ENTRIES = 256;

/** Decompresses a layer blob (gzip in-process, zstd through Debian's `zstd`). */
async function* decompress(src: AsyncIterable<Uint8Array>, compression: LayerCompression): AsyncGenerator<Uint8Array> {
  if (compression === 'uncompressed') {
    yield* src;
    return;
  }
  if (compression === 'gzip') {
    const z = createGunzip();
    const done = pipeline(Readable.from(src), z);
    yield* z;
    await done;
    return;
  }
  const child = spawn('zstd', ['-d', '-q', '-c'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new KilnError('internal', `zstd -d exited with ${code}: ${stderr.trim()}`))));
  });
  const fed = pipeline(Readable.from(src), child.stdin);
  yield* child.stdout;
  await Promise.all([fed, exited]);
}
