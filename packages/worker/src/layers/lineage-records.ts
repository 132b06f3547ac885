import type { Database, Statement } from '../worker-db.js';

/** What is kept of a snapshot's image (or imported) layer: enough to describe its blob and find it again. */
export interface StoredBaseLayer {
  digest: string;
  size: number;
  mediaType: string;
  diffId: string;
  /** `docker-image://REF` when it was pulled from a registry (where it can be fetched again). */
  origin?: string;
  /** Set for a layer imported from a build cache or another worker. */
  imported?: { createdBy?: string };
}

/** One committed snapshot's lineage, as persisted. */
export interface LineageRow {
  id: string;
  parent?: string;
  output: boolean;
  createdBy?: string;
  base?: StoredBaseLayer;
}

/**
 * The persisted lineage of committed snapshots (table `snapshot_lineage` of
 * the worker's SQLite file, next to the retained refs): which snapshot each
 * one diffs against, whether it is an op output, the op that made it, the
 * blob of an image layer. Without it a worker restarted on the same root
 * sees its cached refs as whole trees (one layer each). Every method is
 * synchronous.
 */
export interface LineageRecords {
  all(): LineageRow[];
  /** A newly committed snapshot (replaces a stale row of the same id). */
  committed(id: string, parent: string | undefined): void;
  setParent(id: string, parent: string | undefined): void;
  /** `id` is an op's output, made by the op described as `createdBy` (when known). */
  markOutput(id: string, createdBy: string | undefined): void;
  setBase(id: string, base: StoredBaseLayer): void;
  delete(ids: readonly string[]): void;
}

interface Row {
  id: string;
  parent: string | null;
  output: number;
  created_by: string | null;
  base: string | null;
}

export class SqliteLineageRecords implements LineageRecords {
  private readonly selectAll: Statement;
  private readonly upsert: Statement;
  private readonly updateParent: Statement;
  private readonly updateOutput: Statement;
  private readonly updateBase: Statement;
  private readonly deleteOne: Statement;
  private readonly deleteMany: (ids: readonly string[]) => void;

  constructor(db: Database) {
    this.selectAll = db.prepare('SELECT id, parent, output, created_by, base FROM snapshot_lineage');
    this.upsert = db.prepare('INSERT OR REPLACE INTO snapshot_lineage (id, parent, output, created_by, base) VALUES (?, ?, 0, NULL, NULL)');
    this.updateParent = db.prepare('UPDATE snapshot_lineage SET parent = ? WHERE id = ?');
    this.updateOutput = db.prepare('UPDATE snapshot_lineage SET output = 1, created_by = ? WHERE id = ?');
    this.updateBase = db.prepare('UPDATE snapshot_lineage SET base = ? WHERE id = ?');
    this.deleteOne = db.prepare('DELETE FROM snapshot_lineage WHERE id = ?');
    this.deleteMany = db.transaction((ids: readonly string[]) => {
      for (const id of ids) this.deleteOne.run(id);
    });
  }

  all(): LineageRow[] {
    return (this.selectAll.all() as Row[]).map((r) => ({
      id: r.id,
      ...(r.parent !== null ? { parent: r.parent } : {}),
      output: r.output !== 0,
      ...(r.created_by !== null ? { createdBy: r.created_by } : {}),
      ...baseOf(r.base),
    }));
  }

  committed(id: string, parent: string | undefined): void {
    this.upsert.run(id, parent ?? null);
  }

  setParent(id: string, parent: string | undefined): void {
    this.updateParent.run(parent ?? null, id);
  }

  markOutput(id: string, createdBy: string | undefined): void {
    this.updateOutput.run(createdBy ?? null, id);
  }

  setBase(id: string, base: StoredBaseLayer): void {
    this.updateBase.run(JSON.stringify(base), id);
  }

  delete(ids: readonly string[]): void {
    if (ids.length > 0) this.deleteMany(ids);
  }
}

function baseOf(json: string | null): { base?: StoredBaseLayer } {
  const base = json === null ? undefined : parseBase(json);
  return base ? { base } : {};
}

/** A stored base layer; undefined (the snapshot is then diffed like any other) when the JSON is not one. */
function parseBase(json: string): StoredBaseLayer | undefined {
  try {
    const b = JSON.parse(json) as Partial<StoredBaseLayer> | null;
    if (!b || typeof b.digest !== 'string' || typeof b.size !== 'number' || typeof b.mediaType !== 'string' || typeof b.diffId !== 'string') return undefined;
    return {
      digest: b.digest,
      size: b.size,
      mediaType: b.mediaType,
      diffId: b.diffId,
      ...(typeof b.origin === 'string' ? { origin: b.origin } : {}),
      ...(b.imported && typeof b.imported === 'object' ? { imported: typeof b.imported.createdBy === 'string' ? { createdBy: b.imported.createdBy } : {} } : {}),
    };
  } catch {
    return undefined;
  }
}
