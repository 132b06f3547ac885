import type { ActiveSnapshot, SnapshotInfo, Snapshotter, SnapshotUsage, SnapshotView } from '@kiln/snapshotter';

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
 * Everything else is passed through to the wrapped snapshotter.
 */
export class LineageSnapshotter implements Snapshotter {
  private readonly nodes = new Map<string, Node>();
  /** Active key -> the parent it was prepared from. */
  private readonly preparedFrom = new Map<string, string | undefined>();
  /** Creation times of committed snapshots from the wrapped snapshotter (see createdAt), and the commit count they saw. */
  private listed: { commits: number; times: Promise<Map<string, number>> } | undefined;
  private commits = 0;

  /** `onRemoved` is told about each committed snapshot actually removed. */
  constructor(
    private readonly inner: Snapshotter,
    private readonly onRemoved: (id: string) => void = () => undefined,
  ) {}

  async prepare(key: string, parent?: string, opts?: { signal?: AbortSignal }): Promise<ActiveSnapshot> {
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

  async changes(id: string): Promise<SnapshotView | undefined> {
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
      for (const n of this.nodes.values()) {
        if (n.parent !== keyOrId) continue;
        n.parent = node.parent;
        if (grandparent) grandparent.children++;
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
      this.onRemoved(id);
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
    if (n) n.base = layer;
  }

  base(id: string): BaseLayer | undefined {
    return this.nodes.get(id)?.base;
  }

  /** Marks `id` as an op's output: it keeps its own layer even once removed while children live. */
  markOutput(id: string): void {
    const n = this.nodes.get(id);
    if (n) n.output = true;
  }

  /** Records the description of the op that made `id` (the first one wins). */
  describe(id: string, createdBy: string): void {
    const n = this.nodes.get(id);
    if (n && n.createdBy === undefined && n.base === undefined) n.createdBy = createdBy;
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
