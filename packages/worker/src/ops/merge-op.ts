import type { llb } from '@kiln/api';
import { copyPath } from '../fs/copy.js';
import { newSnapshotKey, type OpContext, type OpResult } from './op-context.js';
import { OpFailure } from './op-failure.js';

/**
 * MergeOp: the inputs layered in order. The result is prepared on the
 * first input's snapshot (so its layers stay shared, and an image export
 * diffs only what the later inputs add), then each later input's tree is
 * copied over it: files, links and special entries replace what is there,
 * directories merge. Inputs are whole trees, so no whiteouts are needed.
 */
export async function runMergeOp(ctx: OpContext, op: llb.MergeOp): Promise<OpResult> {
  const ids = op.inputs.map((i) => {
    const id = ctx.inputs[Number(i)];
    if (i < 0n || id === undefined) throw new OpFailure(`failed to merge: input ${i} does not exist (the op has ${ctx.inputs.length})`);
    return id;
  });
  if (ids.length === 0) throw new OpFailure('failed to merge: a merge needs at least one input');
  const key = newSnapshotKey(ctx.digest, 'merge');
  const active = await ctx.snapshotter.prepare(key, ids[0], { signal: ctx.signal });
  try {
    for (const id of ids.slice(1)) {
      ctx.signal?.throwIfAborted();
      const view = await ctx.snapshotter.view(id);
      try {
        await copyPath(view.path, '/', active.path, '/', {
          followSymlink: false,
          dirCopyContents: true,
          createDestPath: true,
          allowWildcard: false,
          allowEmptyWildcard: false,
          alwaysReplaceExistingDestPaths: true,
          includePatterns: [],
          excludePatterns: [],
        });
      } finally {
        await view.release();
      }
    }
    return [await ctx.snapshotter.commit(key)];
  } catch (err) {
    await ctx.snapshotter.remove(key).catch(() => undefined);
    throw OpFailure.wrap('failed to merge', err);
  }
}
