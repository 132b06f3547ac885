import { KilnError, type Logger } from '@kiln/common';
import type { ActiveSnapshot, PrepareOptions, SnapshotChanges, SnapshotInfo, Snapshotter, SnapshotUsage, SnapshotView } from '@kiln/snapshotter';
import type { LineageRecords, StoredBaseLayer } from './lineage-records.js';

/** A layer that came unchanged from a pulled image: its blob as the registry served it. */
export interface BaseLayer {
  digest: string;
  size: number;
  mediaType: string;
  /** sha256 of the uncompressed tar. */
  diffId: string;
  /** Fetches the blob again (from the registry) when the content store no longer has it. */
  fetch(signal?: AbortSignal): AsyncIterable<Uint8Array>;
  /** Set for a layer imported from a build cache: the step that made it (not a base image layer). */
  imported?: { createdBy?: string };
  /** `docker-image://REF` it was pulled from, kept so a restarted worker can fetch the blob again. */
  origin?: string;
}

export interface LineageOptions {
  /** Told about each committed snapshot actually removed. */
  onRemoved?: (id: string) => void;
  /** Where the lineage persists (see `restore`); in memory only without. */
  records?: LineageRecords;
  /** How a restored base layer's blob is fetched again when the content store lost it. */
  fetchBase?: (layer: StoredBaseLayer) => BaseLayer['fetch'];
  logger?: Logger;
}

interface Node {
  parent?: string;
  /** Committed children not yet removed. */
  children: number;
  /** remove() was called while children still needed this snapshot. */
  removed: boolean;
  /** An op output (held by a ref at some point): its own layer, kept for its children's diffs. */
  output: boolean;
  base?: BaseLayer;
  createdBy?: string;
}

/**
 * A Snapshotter that records the lineage of every snapshot committed through
 * it (which committed snapshot it was prepared from, which came from image
 * layers, which op made it), so a ref's layers can be made as diffs against
 * parents. A removed op output (see `markOutput`) stays on disk while a
 * committed child still needs it as the base of its diff (the Snapshotter
 * contract allows removing a parent; a diff needs it), and the last child's
 * removal removes it. Any other removed snapshot (an op's intermediate) is
 * spliced out: its children then diff against its parent, so their layer
 * holds its changes too.
 *
 * With `records`, the lineage persists (written as it changes) and
 * `restore()` reads it back after a restart, so cached refs keep one layer
 * per step; snapshots without a record keep the old behaviour (a whole-tree
 * layer).
 *
 * Everything else is passed through to the wrapped snapshotter.
 */
export class LineageSnapshotter implements Snapshotter {
  private readonly nodes = new Map<string, Node>();
  /** Active key -> the parent it was prepared from. */
  private readonly preparedFrom = new Map<string, string | undefined>();
  /** Creation times of committed snapshots from the wrapped snapshotter (see createdAt), and the commit count they saw. */
  private listed: { commits: number; times: Promise<Map<string, number>> } | undefined;
  private commits = 0;

  constructor(
    private readonly inner: Snapshotter,
    private readonly o: LineageOptions = {},
  ) {}

  /**
   * Reads the persisted lineage of the committed snapshots that still exist
   * (records of snapshots gone, e.g. removed just before a crash, are
   * dropped). Call once, before anything is committed or removed through
   * this wrapper.
   */
  async restore(): Promise<void> {
    const records = this.o.records;
    if (!records) return;
    const committed = new Set((await this.inner.list()).filter((s) => s.kind === 'committed').map((s) => s.name));
    const rows = this.persisted(() => records.all()) ?? [];
    const stale = rows.filter((r) => !committed.has(r.id)).map((r) => r.id);
    this.persisted(() => records.delete(stale));
    const live = rows.filter((r) => committed.has(r.id) && !this.nodes.has(r.id));
    for (const r of live) {
      const base: BaseLayer | undefined = r.base && { ...r.base, fetch: this.o.fetchBase?.(r.base) ?? missingBlob(r.base.digest) };
      this.nodes.set(r.id, { parent: r.parent, children: 0, removed: false, output: r.output, ...(base ? { base } : {}), ...(r.createdBy !== undefined ? { createdBy: r.createdBy } : {}) });
    }
    for (const r of live) {
      const n = this.nodes.get(r.id)!;
      const p = n.parent === undefined ? undefined : this.nodes.get(n.parent);
      if (p) p.children++;
      else n.parent = undefined;
    }
    if (live.length > 0) this.o.logger?.debug({ snapshots: live.length, dropped: stale.length }, 'restored snapshot lineage');
  }

  /** Runs a write (or read) of the records; a failure is logged, never fails the caller (the lineage in memory stays right). */
  private persisted<T>(fn: () => T): T | undefined {
    try {
      return fn();
    } catch (err) {
      this.o.logger?.warn({ err }, 'failed to persist snapshot lineage');
      return undefined;
    }
  }

  async prepare(key: string, parent?: string, opts?: PrepareOptions): Promise<ActiveSnapshot> {
    const active = await this.inner.prepare(key, parent, opts);
    this.preparedFrom.set(key, parent);
    return active;
  }

  async commit(key: string, opts?: { label?: string }): Promise<string> {
    const id = await this.inner.commit(key, opts);
    const parent = this.preparedFrom.get(key);
    this.preparedFrom.delete(key);
    const p = parent === undefined ? undefined : this.nodes.get(parent);
    this.nodes.set(id, { parent: p ? parent : undefined, children: 0, removed: false, output: false });
    const records = this.o.records;
    if (records) this.persisted(() => records.committed(id, p ? parent : undefined));
    this.commits++;
    if (p) p.children++;
    return id;
  }

  byLabel(label: string): Promise<string | undefined> {
    return this.inner.byLabel(label);
  }

  view(id: string): Promise<SnapshotView> {
    return this.inner.view(id);
  }

  async changes(id: string): Promise<SnapshotChanges | undefined> {
    return this.inner.changes?.(id);
  }

  async remove(keyOrId: string): Promise<void> {
    const node = this.nodes.get(keyOrId);
    if (!node) {
      this.preparedFrom.delete(keyOrId);
      return this.inner.remove(keyOrId);
    }
    if (node.removed) return;
    node.removed = true;
    if (node.children > 0 && !node.output) {
      const grandparent = node.parent === undefined ? undefined : this.nodes.get(node.parent);
      for (const [childId, n] of this.nodes) {
        if (n.parent !== keyOrId) continue;
        n.parent = node.parent;
        if (grandparent) grandparent.children++;
        const records = this.o.records;
        if (records) this.persisted(() => records.setParent(childId, node.parent));
      }
      node.children = 0;
    }
    // Remove this snapshot and then every ancestor that was only kept for it.
    let id: string | undefined = keyOrId;
    while (id !== undefined) {
      const n: Node | undefined = this.nodes.get(id);
      if (!n || !n.removed || n.children > 0) return;
      this.nodes.delete(id);
      await this.inner.remove(id);
      const records = this.o.records;
      if (records) this.persisted(() => records.delete([id!]));
      this.o.onRemoved?.(id);
      const parent: Node | undefined = n.parent === undefined ? undefined : this.nodes.get(n.parent);
      if (!parent) return;
      parent.children--;
      id = n.parent;
    }
  }

  usage(keyOrId: string): Promise<SnapshotUsage> {
    return this.inner.usage(keyOrId);
  }

  list(): Promise<SnapshotInfo[]> {
    return this.inner.list();
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  /**
   * The snapshots `id` was built from, root first, ending with `id`. A
   * snapshot this wrapper did not see committed (e.g. an image layer found
   * by label after a restart) has no known parent: its chain is just itself,
   * so its layer is its whole tree.
   */
  chain(id: string): string[] {
    const out = [id];
    for (let cur = this.nodes.get(id)?.parent; cur !== undefined && this.nodes.has(cur); cur = this.nodes.get(cur)?.parent) out.push(cur);
    return out.reverse();
  }

  parentOf(id: string): string | undefined {
    return this.nodes.get(id)?.parent;
  }

  /** Records that `id` is the snapshot of an image layer with this blob. */
  setBase(id: string, layer: BaseLayer): void {
    const n = this.nodes.get(id);
    if (!n) return;
    n.base = layer;
    const records = this.o.records;
    if (!records) return;
    const { digest, size, mediaType, diffId, origin, imported } = layer;
    this.persisted(() => records.setBase(id, { digest, size, mediaType, diffId, ...(origin ? { origin } : {}), ...(imported ? { imported } : {}) }));
  }

  base(id: string): BaseLayer | undefined {
    return this.nodes.get(id)?.base;
  }

  /**
   * Marks `id` as an op's output: it keeps its own layer even once removed
   * while children live. `createdBy` is the description of the op that made
   * it (the first one wins; never for a base layer).
   */
  markOutput(id: string, createdBy?: string): void {
    const n = this.nodes.get(id);
    if (!n) return;
    const describe = createdBy !== undefined && n.createdBy === undefined && n.base === undefined;
    if (n.output && !describe) return;
    n.output = true;
    if (describe) n.createdBy = createdBy;
    const records = this.o.records;
    if (records) this.persisted(() => records.markOutput(id, n.createdBy));
  }

  createdBy(id: string): string | undefined {
    return this.nodes.get(id)?.createdBy;
  }

  /**
   * The creation time the wrapped snapshotter recorded for committed
   * snapshot `id` (ms since the epoch; it survives restarts, so the same
   * snapshot always gives the same time). Listed once, and again only when
   * `id` is missing and snapshots were committed since.
   */
  async createdAt(id: string): Promise<number | undefined> {
    if (this.listed !== undefined) {
      const time = (await this.listed.times).get(id);
      if (time !== undefined || this.listed.commits === this.commits) return time;
    }
    const listed = {
      commits: this.commits,
      times: this.inner.list().then(
        (infos) => new Map(infos.filter((i) => i.kind === 'committed').map((i) => [i.name, i.createdAtMs])),
        () => new Map<string, number>(),
      ),
    };
    this.listed = listed;
    return (await listed.times).get(id);
  }
}

/** The fetch of a restored layer nobody said how to fetch again: it names the blob. */
function missingBlob(digest: string): BaseLayer['fetch'] {
  return async function* () {
    throw new KilnError('not_found', `layer blob ${digest} is no longer in the content store and this worker cannot fetch it again`, { digest });
  };
}
