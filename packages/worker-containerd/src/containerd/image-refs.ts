import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fromBinary } from '@bufbuild/protobuf';
import { llb } from '@kiln/api';
import type { Logger } from '@kiln/common';
import { formatReference, parseReference } from '@kiln/registry';

export interface ImageRefsOptions {
  /** Where the ref -> image name map is kept across restarts (JSON, rewritten atomically). */
  file: string;
  /** Removes a pulled image from containerd (`ImageRecorder.forget`). */
  forget: (name: string) => Promise<void>;
  logger: Logger;
}

/**
 * Which of the worker's refs came from which pulled image, so containerd's
 * image list follows what the worker holds: once the last ref of an image
 * is gone (the solver dropped its cache entry: `kiln prune`, the GC), the
 * image's record and lease are removed and containerd's GC deletes its
 * blobs; `ctr images ls` and `ctr content ls` do not grow forever. Refs that
 * died with an earlier process are found at `reconcile`.
 */
export class ImageRefs {
  private readonly byRef = new Map<string, string>();
  /** Image pulls running, by name: an image being pulled is never forgotten. */
  private readonly pulling = new Map<string, number>();
  private work: Promise<void> = Promise.resolve();

  constructor(private readonly opts: ImageRefsOptions) {
    try {
      const doc = JSON.parse(readFileSync(opts.file, 'utf8')) as { refs?: Record<string, string> };
      for (const [ref, name] of Object.entries(doc.refs ?? {})) if (typeof name === 'string') this.byRef.set(ref, name);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') opts.logger.warn({ err, file: opts.file }, 'ignoring an unreadable image ref map');
    }
  }

  /**
   * At start: refs not in `live` (the retentions the worker restored) died
   * with the earlier process; images in `recorded` (containerd's records
   * of this worker) with no live ref left are forgotten.
   */
  reconcile(live: ReadonlySet<string>, recorded: () => Promise<string[]>): Promise<void> {
    return this.enqueue(async () => {
      for (const ref of [...this.byRef.keys()]) if (!live.has(ref)) this.byRef.delete(ref);
      this.save();
      for (const name of new Set([...(await recorded())])) await this.forgetIfUnheld(name);
    });
  }

  /** Runs an image pull: `name` is not forgotten meanwhile, and the refs it yields are noted under it. */
  async pull<T extends { outputRefs: string[] }>(name: string, run: () => Promise<T>): Promise<T> {
    await this.work.catch(() => undefined);
    this.pulling.set(name, (this.pulling.get(name) ?? 0) + 1);
    try {
      const res = await run();
      for (const ref of res.outputRefs) this.byRef.set(ref, name);
      if (res.outputRefs.length > 0) this.save();
      return res;
    } finally {
      const n = (this.pulling.get(name) ?? 1) - 1;
      if (n > 0) this.pulling.set(name, n);
      else this.pulling.delete(name);
    }
  }

  /** The last reference to `ref` went: its image goes when no other ref of it is left. */
  gone(ref: string): void {
    const name = this.byRef.get(ref);
    if (name === undefined) return;
    this.byRef.delete(ref);
    this.save();
    void this.enqueue(() => this.forgetIfUnheld(name));
  }

  /** Resolves once the forgetting started so far is done (never rejects). */
  settled(): Promise<void> {
    return this.work.catch(() => undefined);
  }

  private async forgetIfUnheld(name: string): Promise<void> {
    if (this.pulling.has(name) || [...this.byRef.values()].includes(name)) return;
    try {
      await this.opts.forget(name);
      this.opts.logger.debug({ image: name }, 'removed an image no ref holds from containerd');
    } catch (err) {
      this.opts.logger.warn({ err, image: name }, 'failed to remove an image no ref holds from containerd');
    }
  }

  /** One piece of containerd work at a time, in order. */
  private enqueue(fn: () => Promise<void>): Promise<void> {
    this.work = this.work.catch(() => undefined).then(fn);
    return this.work;
  }

  private save(): void {
    try {
      mkdirSync(path.dirname(this.opts.file), { recursive: true });
      const tmp = `${this.opts.file}.${process.pid}.tmp`;
      writeFileSync(tmp, JSON.stringify({ refs: Object.fromEntries(this.byRef) }));
      renameSync(tmp, this.opts.file);
    } catch (err) {
      this.opts.logger.warn({ err, file: this.opts.file }, 'failed to save the image ref map');
    }
  }
}

/** The image a `docker-image://` source op pulls, named as the image recorder names it; undefined for any other op. */
export function pulledImageName(op: Uint8Array): string | undefined {
  try {
    const parsed = fromBinary(llb.OpSchema, op);
    if (parsed.op.case !== 'source') return undefined;
    const id = parsed.op.value.identifier;
    return id.startsWith('docker-image://') ? formatReference(parseReference(id.slice('docker-image://'.length), 'identifier')) : undefined;
  } catch {
    return undefined; // the worker reports a bad op itself
  }
}
