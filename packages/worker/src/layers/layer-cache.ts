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
 * as JSON (rewritten atomically after changes, once per turn of the event
 * loop: an export of 40 layers rewrote it 40 times, 0.26 s of synchronous
 * renames on a loaded host) so a restart keeps it. Entries are hints:
 * callers check that the blob still exists before reuse, so changes a crash
 * loses before the write cost only a recompression.
 */
export class LayerCache {
  private readonly layers = new Map<string, CachedLayer>();
  private pendingSave: NodeJS.Immediate | undefined;

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
    this.scheduleSave();
  }

  delete(key: string): void {
    if (this.layers.delete(key)) this.scheduleSave();
  }

  /** Writes pending changes now (at close). */
  flush(): void {
    if (!this.pendingSave) return;
    clearImmediate(this.pendingSave);
    this.pendingSave = undefined;
    this.save();
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
    if (changed) this.scheduleSave();
  }

  private scheduleSave(): void {
    if (!this.file || this.pendingSave) return;
    this.pendingSave = setImmediate(() => {
      this.pendingSave = undefined;
      this.save();
    });
  }

  // Synchronous: small file, and no interleaving of concurrent saves.
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
