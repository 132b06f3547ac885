import { CanceledError } from '@kiln/common';
import { localAttrs } from '@kiln/llb';
import { extractTar } from '../fs/untar.js';
import type { SessionFiles } from '../worker.js';
import { OpFailure } from './op-failure.js';
import { treeContentDigest } from './content-digest.js';
import { newSnapshotKey, type OpContext, type OpResult } from './op-context.js';

export interface LocalSourceParams {
  /** The shared directory name of `local://NAME`. */
  name: string;
  attrs: Record<string, string>;
  sessions: SessionFiles;
  sessionId: string;
  progressIntervalMs: number;
  /** Receives the digest of the content received (see ExtractResult.contentDigest). */
  onContentDigest?: (digest: string) => void;
}

/**
 * `local://NAME`: fetches the matching files of the client's directory
 * through the session as a tar and unpacks it into a new snapshot.
 * Publishes "transferring NAME:" status events (bytes in `current`) while it runs (at
 * most one per progress interval) and once when done.
 */
export async function runLocalSource(ctx: OpContext, p: LocalSourceParams): Promise<OpResult> {
  const { includePatterns, excludePatterns, followPaths } = localAttrs(p.attrs);
  const key = newSnapshotKey(ctx.digest, 'local');
  const active = await ctx.snapshotter.prepare(key, undefined, { signal: ctx.signal });
  // As BuildKit: the id and name are "transferring NAME:"; the size travels in `current`.
  const statusId = `transferring ${p.name}:`;
  const startedMs = Date.now();
  let lastMs = startedMs;
  // Ends the session stream when extraction stops early (error or cancel).
  const ac = new AbortController();
  const onAbort = () => ac.abort(ctx.signal?.reason);
  ctx.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const stream = p.sessions.fetchFiles(
      { sessionId: p.sessionId, dirName: p.name, includePatterns, excludePatterns, followPaths },
      { signal: ac.signal },
    );
    const res = await extractTar(active.path, tarChunks(stream), {
      signal: ctx.signal,
      logger: ctx.logger,
      onBytes: (n) => {
        const now = Date.now();
        if (now - lastMs < p.progressIntervalMs) return;
        lastMs = now;
        void ctx.progress.status({ id: statusId, name: statusId, current: n, startedMs });
      },
    });
    const id = await ctx.snapshotter.commit(key);
    if (p.onContentDigest) {
      const view = await ctx.snapshotter.view(id);
      try {
        p.onContentDigest(treeContentDigest(view.path));
      } finally {
        await view.release();
      }
    }
    await ctx.progress.status({ id: statusId, name: statusId, current: res.bytes, startedMs, completedMs: Date.now() });
    return [id];
  } catch (err) {
    ac.abort();
    await ctx.snapshotter.remove(key).catch(() => undefined);
    if (ctx.signal?.aborted) throw new CanceledError(`transfer of ${p.name} canceled`, { cause: err });
    throw OpFailure.wrap(`failed to transfer local directory "${p.name}"`, err);
  } finally {
    ctx.signal?.removeEventListener('abort', onAbort);
  }
}

async function* tarChunks(stream: AsyncIterable<{ tarChunk: Uint8Array }>): AsyncGenerator<Uint8Array> {
  for await (const msg of stream) if (msg.tarChunk.byteLength > 0) yield msg.tarChunk;
}
