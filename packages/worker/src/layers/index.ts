import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Logger } from '@kiln/common';
import type { CompiledWorkerOptions } from '../worker.js';
import { CompressPool } from './compress-pool.js';
import { LayerCache } from './layer-cache.js';
import { LayerMaker } from './layer-maker.js';
import { LineageSnapshotter, type BaseLayer } from './lineage.js';
import type { StoredBaseLayer } from './lineage-records.js';

/**
 * The worker's snapshotter wrapped to record lineage, and the layer maker
 * over it (absent without a content store). With `stateDir`, the layer
 * cache persists in `<stateDir>/layers/cache.json` and blobs are staged in
 * `<stateDir>/layers/tmp`; without it, in a temp dir and in memory.
 */
export function createLayerMaker(o: CompiledWorkerOptions, logger: Logger, fetchBase?: (layer: StoredBaseLayer) => BaseLayer['fetch']): { snapshots: LineageSnapshotter; maker?: LayerMaker } {
  const dir = o.stateDir ? path.join(o.stateDir, 'layers') : undefined;
  const cache = new LayerCache(dir && path.join(dir, 'cache.json'), logger);
  // The lineage persists with the retained refs (same SQLite file), so cached refs keep their layers across restarts.
  const snapshots = new LineageSnapshotter(o.snapshotter, { onRemoved: (id) => cache.forgetSnapshot(id), records: o.retainedRefs.lineage, fetchBase, logger });
  if (!o.content) return { snapshots };
  const maker = new LayerMaker({
    snapshots,
    content: o.content,
    pool: new CompressPool(o.layerThreads),
    cache,
    tmpDir: dir ? path.join(dir, 'tmp') : path.join(tmpdir(), `kiln-layers-${process.pid}-${o.id.replace(/[^A-Za-z0-9_-]/g, '_')}`),
    logger: logger.child({ component: 'layers' }),
  });
  return { snapshots, maker };
}
