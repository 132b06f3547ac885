import { randomBytes } from 'node:crypto';
import { CanceledError, InvalidArgumentError, KilnError, type Logger } from '@kiln/common';
import { applyLayer, type Snapshotter } from '@kiln/snapshotter';
import { readBlob, type ContentClient } from '../layers/content-blobs.js';
import type { BaseLayer } from '../layers/lineage.js';
import { chainIdOf, layerCompression, layerLabel, type LayerStore } from './image-source.js';

/** One layer of an imported chain: a blob in the content store and the tar digest it must unpack to. */
export interface ImportedLayer {
  digest: string;
  size: number;
  mediaType: string;
  diffId: string;
  /** The step that made it (kept for image history). */
  createdBy?: string;
}

export interface LayerImportParams {
  snapshotter: Snapshotter;
  layers: LayerStore;
  content: ContentClient;
  logger: Logger;
  /** Told about each layer snapshot made, with the blob it came from. */
  onLayer: (snapshotId: string, layer: BaseLayer) => void;
  signal?: AbortSignal;
}

const DIGEST = /^sha256:[0-9a-f]{64}$/;

/**
 * Applies `chain` (base first) by OCI chain id, each layer onto the snapshot
 * of the ones below it, reading blobs from the content store; chains the
 * LayerStore already has are reused. Returns the top snapshot (owned by the
 * LayerStore; an empty chain gives the store's empty snapshot).
 */
export async function importLayerChain(chain: readonly ImportedLayer[], p: LayerImportParams): Promise<string> {
  for (const [i, l] of chain.entries()) {
    if (!DIGEST.test(l.digest)) throw new InvalidArgumentError(`layer ${i} has an invalid digest "${l.digest}"`, 'layers');
    if (!DIGEST.test(l.diffId)) throw new InvalidArgumentError(`layer ${l.digest} has an invalid diff id "${l.diffId}"`, 'layers');
    layerCompression(l.mediaType);
  }
  if (chain.length === 0) return p.layers.get('empty', () => emptySnapshot(p), p.signal);
  let parent: string | undefined;
  let chainId: string | undefined;
  for (const layer of chain) {
    chainId = chainIdOf(chainId, layer.diffId);
    const below = parent;
    const id = chainId;
    parent = await p.layers.get(
      id,
      async () => {
        const made = await applyOne(layer, below, id, p);
        const { digest, size, mediaType, diffId } = layer;
        p.onLayer(made, { digest, size, mediaType, diffId, fetch: (signal) => readBlob(p.content, digest, signal), imported: { createdBy: layer.createdBy } });
        return made;
      },
      p.signal,
    );
  }
  return parent!;
}

async function applyOne(layer: ImportedLayer, parent: string | undefined, chainId: string, p: LayerImportParams): Promise<string> {
  const key = `import-${layer.digest.slice(7, 23)}-${randomBytes(6).toString('hex')}`;
  const active = await p.snapshotter.prepare(key, parent, { signal: p.signal });
  try {
    let got: string;
    try {
      got = (await applyLayer(active.path, readBlob(p.content, layer.digest, p.signal), { signal: p.signal, logger: p.logger })).diffId;
    } catch (err) {
      if (p.signal?.aborted) throw new CanceledError(`import of layer ${layer.digest} canceled`, { cause: err });
      if (err instanceof KilnError) throw err;
      throw new KilnError('failed_precondition', `failed to apply cached layer ${layer.digest}: ${(err as Error).message}`, { digest: layer.digest }, { cause: err });
    }
    if (got !== layer.diffId) {
      throw new KilnError('failed_precondition', `failed to apply cached layer ${layer.digest}: uncompressed digest ${got} does not match diff id ${layer.diffId}`, { digest: layer.digest });
    }
    return await p.snapshotter.commit(key, { label: layerLabel(chainId) });
  } catch (err) {
    await p.snapshotter.remove(key).catch(() => undefined);
    throw err;
  }
}

async function emptySnapshot(p: LayerImportParams): Promise<string> {
  const key = `import-empty-${randomBytes(6).toString('hex')}`;
  await p.snapshotter.prepare(key, undefined, { signal: p.signal });
  try {
    return await p.snapshotter.commit(key, { label: layerLabel('empty') });
  } catch (err) {
    await p.snapshotter.remove(key).catch(() => undefined);
    throw err;
  }
}
