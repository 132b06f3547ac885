import { randomBytes } from 'node:crypto';

interface RefEntry {
  snapshotId: string;
  count: number;
}

/**
 * The worker's refs: opaque ids handed to the solver, each naming one
 * committed snapshot, reference counted. Every method is synchronous, so
 * concurrent async callers cannot interleave inside one.
 */
export class RefTable {
  private readonly refs = new Map<string, RefEntry>();

  /** A new ref with one reference for `snapshotId`. */
  add(snapshotId: string): string {
    const ref = `ref-${randomBytes(12).toString('hex')}`;
    this.refs.set(ref, { snapshotId, count: 1 });
    return ref;
  }

  /** Takes one reference to `ref` naming `snapshotId` (restoring a ref persisted before a restart). */
  adopt(ref: string, snapshotId: string): void {
    const e = this.refs.get(ref);
    if (e) e.count++;
    else this.refs.set(ref, { snapshotId, count: 1 });
  }

  /** Forgets `ref` whatever its count (its snapshot is gone). */
  forget(ref: string): void {
    this.refs.delete(ref);
  }

  snapshotOf(ref: string): string | undefined {
    return this.refs.get(ref)?.snapshotId;
  }

  /** One more reference to `ref`; false when unknown. */
  acquire(ref: string): boolean {
    const e = this.refs.get(ref);
    if (!e) return false;
    e.count++;
    return true;
  }

  /** Drops one reference; returns the snapshot to remove when it was the last. */
  release(ref: string): string | undefined {
    const e = this.refs.get(ref);
    if (!e) return undefined;
    if (--e.count > 0) return undefined;
    this.refs.delete(ref);
    return e.snapshotId;
  }

  /** Forgets every ref, returning their snapshots. */
  clear(): string[] {
    const ids = [...this.refs.values()].map((e) => e.snapshotId);
    this.refs.clear();
    return ids;
  }

  get size(): number {
    return this.refs.size;
  }
}
