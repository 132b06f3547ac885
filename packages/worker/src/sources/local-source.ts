import { CanceledError, ContextDiffError, encodeContextManifest, readContextDiff } from '@kiln/common';
import { localAttrs } from '@kiln/llb';
import type { SnapshotView } from '@kiln/snapshotter';
import { extractTar } from '../fs/untar.js';
import { treeContentDigest } from '../ops/content-digest.js';
import { newSnapshotKey, type OpContext, type OpResult } from '../ops/op-context.js';
import { OpFailure } from '../ops/op-failure.js';
import type { SessionFiles } from '../worker.js';
import { applyContextDiff, manifestContentDigest, type ContextManifest } from './local-diff-apply.js';
import type { CachedContext } from './local-contexts.js';

/** Transfers stacked on one snapshot chain before a copy starts a fresh tree (keeps overlay chains short). */
export const MAX_CONTEXT_CHAIN = 8;

export interface LocalSourceParams {
  /** The shared directory name of `local://NAME`. */
  name: string;
  attrs: Record<string, string>;
  sessions: SessionFiles;
  sessionId: string;
  progressIntervalMs: number;
  /** Receives the digest of the content received (see ExtractResult.contentDigest). */
  onContentDigest?: (digest: string) => void;
  /** Receives each file's and link's content digest (incremental transfers only; see RunResponse.content_files). */
  onContentFiles?: (files: ContentFile[]) => void;
  /**
   * Incremental transfer: the copy of this directory received last (one
   * reference owned by the caller, who releases it after the run), and
   * where to report the new copy's manifest. Absent: a full tar transfer.
   */
  incremental?: {
    base: CachedContext | undefined;
    onCopy: (copy: { snapshotId: string; manifest: ContextManifest; depth: number }) => void;
    /**
     * Called instead of onCopy when the client reported no change against
     * `base`: the result is base's own snapshot, so the caller hands out
     * (another reference to) base's ref rather than a new one. False when
     * it cannot (then a new snapshot is made as usual).
     */
    onUnchanged: () => boolean;
  };
}

/**
 * `local://NAME`: fetches the matching files of the client's directory
 * through the session into a new snapshot. Incremental (a previous copy
 * known): the snapshot is prepared on that copy (or, past
 * MAX_CONTEXT_CHAIN, a fresh tree copying it) and the client sends only
 * what changed against its manifest; else a tar of everything.
 * Publishes "transferring NAME:" status events (bytes received in `current`)
 * while it runs (at most one per progress interval) and once when done.
 */
export async function runLocalSource(ctx: OpContext, p: LocalSourceParams): Promise<OpResult> {
  const { includePatterns, excludePatterns, followPaths } = localAttrs(p.attrs);
  const key = newSnapshotKey(ctx.digest, 'local');
  const base = p.incremental?.base;
  const seeded = base !== undefined && base.depth < MAX_CONTEXT_CHAIN;
  // As BuildKit: the id and name are "transferring NAME:"; the size travels in `current`.
  const statusId = `transferring ${p.name}:`;
  const startedMs = Date.now();
  let lastMs = startedMs;
  let bytes = 0;
  const onBytes = (n: number) => {
    bytes += n;
    const now = Date.now();
    if (now - lastMs < p.progressIntervalMs) return;
    lastMs = now;
    void ctx.progress.status({ id: statusId, name: statusId, current: bytes, startedMs });
  };
  // Ends the session stream when extraction stops early (error or cancel).
  const ac = new AbortController();
  const onAbort = () => ac.abort(ctx.signal?.reason);
  ctx.signal?.addEventListener('abort', onAbort, { once: true });
  let baseView: SnapshotView | undefined;
  try {
    const request = { sessionId: p.sessionId, dirName: p.name, includePatterns, excludePatterns, followPaths };
    let digest: string;
    if (p.incremental) {
      const stream = p.sessions.fetchFiles(
        { ...request, diff: true, baseManifest: base ? encodeContextManifest(base.manifest.values()) : new Uint8Array() },
        { signal: ac.signal },
      );
      const changes = readContextDiff(counted(stream, onBytes));
      const first = await changes.next();
      if (first.done && base && p.incremental.onUnchanged()) {
        // Nothing changed: the previous copy is the result (no snapshot made, mounted or
        // hashed again: a cached rebuild's context step costs one round trip).
        digest = manifestContentDigest(base.manifest);
        ctx.logger.debug({ dir: p.name, bytes }, 'context unchanged: previous copy reused');
        p.onContentDigest?.(digest);
        p.onContentFiles?.(manifestFiles(base.manifest));
        await ctx.progress.status({ id: statusId, name: statusId, current: bytes, startedMs, completedMs: Date.now() });
        return [base.snapshotId];
      }
      const active = await ctx.snapshotter.prepare(key, seeded ? base.snapshotId : undefined, { signal: ctx.signal });
      if (base && !seeded) baseView = await ctx.snapshotter.view(base.snapshotId);
      const res = await applyContextDiff({
        root: active.path,
        base: base?.manifest ?? new Map(),
        seeded,
        baseRoot: baseView?.path,
        changes: prepend(first, changes),
        signal: ctx.signal,
      });
      ctx.logger.debug({ dir: p.name, bytes, changed: res.changed, deleted: res.deleted, contentBytes: res.contentBytes, seeded }, 'context diff applied');
      digest = manifestContentDigest(res.manifest);
      const id = await ctx.snapshotter.commit(key);
      p.incremental.onCopy({ snapshotId: id, manifest: res.manifest, depth: seeded ? base.depth + 1 : 0 });
      p.onContentDigest?.(digest);
      p.onContentFiles?.(manifestFiles(res.manifest));
      await ctx.progress.status({ id: statusId, name: statusId, current: bytes, startedMs, completedMs: Date.now() });
      return [id];
    }
    const active = await ctx.snapshotter.prepare(key, undefined, { signal: ctx.signal });
    const stream = p.sessions.fetchFiles(request, { signal: ac.signal });
    await extractTar(active.path, counted(stream, onBytes), { signal: ctx.signal, logger: ctx.logger });
    const id = await ctx.snapshotter.commit(key);
    if (p.onContentDigest) {
      const view = await ctx.snapshotter.view(id);
      try {
        digest = treeContentDigest(view.path);
      } finally {
        await view.release();
      }
      p.onContentDigest(digest);
    }
    await ctx.progress.status({ id: statusId, name: statusId, current: bytes, startedMs, completedMs: Date.now() });
    return [id];
  } catch (err) {
    ac.abort();
    await ctx.snapshotter.remove(key).catch(() => undefined);
    if (ctx.signal?.aborted) throw new CanceledError(`transfer of ${p.name} canceled`, { cause: err });
    if (err instanceof ContextDiffError) throw new OpFailure(`failed to transfer local directory "${p.name}": ${err.message}`, { cause: err });
    throw OpFailure.wrap(`failed to transfer local directory "${p.name}"`, err);
  } finally {
    await baseView?.release();
    ctx.signal?.removeEventListener('abort', onAbort);
  }
}

/**
 * `first` (a result already taken from `rest`) followed by the rest: an
 * iterator handing out `rest`'s own promises (no generator layer, which
 * would cost more promises per change of a diff of 100k entries).
 */
function prepend<T>(first: IteratorResult<T>, rest: AsyncIterator<T>): AsyncIterable<T> {
  let pending: IteratorResult<T> | undefined = first;
  const it: AsyncIterator<T> = {
    next: () => {
      if (pending === undefined) return rest.next();
      const r = pending;
      pending = undefined;
      return Promise.resolve(r);
    },
    return: async () => {
      pending = undefined;
      await rest.return?.(undefined);
      return { done: true, value: undefined };
    },
  };
  return { [Symbol.asyncIterator]: () => it };
}

/** A file in a received context with its content digest (a link: a digest of its target). */
export interface ContentFile {
  path: string;
  digest: string;
}

/** Most files reported per context: beyond it the explainer names only the content digest (bounds the solver's records). */
const MAX_CONTENT_FILES = 5000;

function manifestFiles(manifest: ContextManifest): ContentFile[] {
  const out: ContentFile[] = [];
  for (const [path, e] of manifest) {
    if (out.length >= MAX_CONTENT_FILES) return [];
    if (e.type === 'file' && e.sha256) out.push({ path, digest: `sha256:${e.sha256}` });
    else if (e.type === 'symlink') out.push({ path, digest: `link:${e.linkname}` });
  }
  return out;
}

async function* counted(stream: AsyncIterable<{ tarChunk: Uint8Array }>, onBytes: (n: number) => void): AsyncGenerator<Uint8Array> {
  for await (const msg of stream) {
    if (msg.tarChunk.byteLength === 0) continue;
    onBytes(msg.tarChunk.byteLength);
    yield msg.tarChunk;
  }
}
