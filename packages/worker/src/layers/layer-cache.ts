import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from '@kiln/common';

/** A layer blob made before, or the fact that the diff was empty. */
export type CachedLayer = { empty: true } | { empty: false; digest: string; size: number; diffId: string };

interface CacheFile {
  version: 1;
  layers: Record<string, CachedLayer>;
}

/**
 * Layers already made, by what determines their bytes (snapshot, parent,
 * compression, level, epoch). Kept in memory and, with a `file`, persisted
 * as JSON (rewritten atomically on each change) so a restart keeps it.
 * Entries are hints: callers check that the blob still exists before reuse.
 */
export class LayerCache {
  private readonly layers = new Map<string, CachedLayer>();

  constructor(
    private readonly file: string | undefined,
    private readonly logger: Logger,
  ) {
    if (!file) return;
    try {
      const doc = JSON.parse(readFileSync(file, 'utf8')) as CacheFile;
      if (doc.version === 1) for (const [k, v] of Object.entries(doc.layers)) this.layers.set(k, v);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') logger.warn({ err, file }, 'ignoring unreadable layer cache');
    }
  }

  get(key: string): CachedLayer | undefined {
    return this.layers.get(key);
  }

  set(key: string, layer: CachedLayer): void {
    this.layers.set(key, layer);
    this.save();
  }

  delete(key: string): void {
    if (this.layers.delete(key)) this.save();
  }

  /** Forgets entries whose key mentions the snapshot `id` (it was removed). */
  forgetSnapshot(id: string): void {
    let changed = false;
    for (const k of this.layers.keys()) {
      if (k.includes(id)) {
        this.layers.delete(k);
        changed = true;
      }
    }
    if (changed) this.save();
  }

  // Synchronous: small file, rare writes, and no interleaving of concurrent saves.
  private save(): void {
    if (!this.file) return;
    try {
      mkdirSync(path.dirname(this.file), { recursive: true });
      const doc: CacheFile = { version: 1, layers: Object.fromEntries(this.layers) };
      const tmp = `${this.file}.${process.pid}.tmp`;
      writeFileSync(tmp, JSON.stringify(doc));
      renameSync(tmp, this.file);
    } catch (err) {
      this.logger.warn({ err, file: this.file }, 'failed to save the layer cache');
    }
  }
}
