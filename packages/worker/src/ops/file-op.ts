import type { llb } from '@kiln/api';
import { InvalidArgumentError } from '@kiln/common';
import { fileActionInput } from '@kiln/llb';
import type { SnapshotView } from '@kiln/snapshotter';
import { OpFailure } from './op-failure.js';
import { copyAction, mkdirAction, mkfileAction, rmAction, symlinkAction } from './file-actions.js';
import { newSnapshotKey, type OpContext, type OpResult } from './op-context.js';

type ActionResult = { kind: 'active'; key: string; path: string } | { kind: 'committed'; id: string } | { kind: 'taken' };

/**
 * Runs a FileOp: each action works on a writable snapshot seeded from its
 * input (an op input, scratch, or an earlier action's result) and reads its
 * secondary input (copy source) read-only. An action result used once, as
 * the next action's base, is modified in place; results that are outputs or
 * used several times are committed. Returns the committed snapshot of each
 * output index.
 */
export async function runFileOp(ctx: OpContext, op: llb.FileOp): Promise<OpResult> {
  const actions = op.actions;
  if (actions.length === 0) throw new InvalidArgumentError('file op has no actions', 'op');
  const uses = actions.map(() => 0);
  const secondaryUse = actions.map(() => false);
  let outputs = 0;
  actions.forEach((a, i) => {
    const input = fileActionInput(a.input);
    if (input.kind === 'action') {
      checkAction(input.index, i);
      uses[input.index]!++;
    } else if (input.kind === 'input') {
      checkInput(ctx, input.index);
    }
    if (a.action.case === 'copy') {
      const sec = fileActionInput(a.secondaryInput);
      if (sec.kind === 'action') {
        checkAction(sec.index, i);
        uses[sec.index]!++;
        secondaryUse[sec.index] = true;
      } else if (sec.kind === 'input') {
        checkInput(ctx, sec.index);
      }
    }
    if (a.output >= 0n) outputs = Math.max(outputs, Number(a.output) + 1);
  });

  const results: ActionResult[] = [];
  const views: SnapshotView[] = [];
  /** Keys of empty trees made for scratch copy sources. */
  const temps: string[] = [];
  const outputIds: (string | undefined)[] = new Array(outputs).fill(undefined);
  const { snapshotter } = ctx;
  try {
    for (const [i, a] of actions.entries()) {
      ctx.signal?.throwIfAborted();
      // The writable tree this action changes.
      const input = fileActionInput(a.input);
      const prev = input.kind === 'action' ? results[input.index] : undefined;
      let base: { key: string; path: string };
      if (input.kind === 'action' && prev?.kind === 'active' && uses[input.index] === 1 && !secondaryUse[input.index] && actions[input.index]!.output < 0n) {
        base = prev;
        results[input.index] = { kind: 'taken' };
      } else {
        const parent = input.kind === 'input' ? ctx.inputs[input.index] : input.kind === 'scratch' ? undefined : committedId(results, input.index);
        base = await snapshotter.prepare(newSnapshotKey(ctx.digest, `file${i}`), parent, { signal: ctx.signal });
      }
      results[i] = { kind: 'active', ...base };

      const act = a.action;
      switch (act.case) {
        case 'mkdir':
          await step(`create directory ${act.value.path}`, () => mkdirAction(base.path, act.value));
          break;
        case 'mkfile':
          await step(`create file ${act.value.path}`, () => mkfileAction(base.path, act.value));
          break;
        case 'rm':
          await step(`remove ${act.value.path}`, () => rmAction(base.path, act.value));
          break;
        case 'symlink':
          await step(`create symlink ${act.value.newpath}`, () => symlinkAction(base.path, act.value));
          break;
        case 'copy': {
          const srcRoot = await secondaryPath(ctx, a.secondaryInput, results, views, temps, i);
          await step(`copy ${act.value.src}`, () => copyAction(srcRoot, base.path, act.value));
          break;
        }
        default:
          throw new InvalidArgumentError(`file action ${i} has no action set`, 'op');
      }
      if (a.output >= 0n || uses[i]! > 1 || secondaryUse[i]) {
        const id = await snapshotter.commit(base.key);
        results[i] = { kind: 'committed', id };
        if (a.output >= 0n) outputIds[Number(a.output)] = id;
      }
    }
  } catch (err) {
    await cleanup(ctx, results, views, temps, new Set());
    throw err;
  }
  const missing = outputIds.findIndex((id) => id === undefined);
  const keep = new Set(outputIds.filter((id): id is string => id !== undefined));
  await cleanup(ctx, results, views, temps, keep);
  if (missing >= 0) {
    for (const id of keep) await snapshotter.remove(id);
    throw new InvalidArgumentError(`file op declares no action for output ${missing}`, 'op');
  }
  return outputIds as string[];

  function checkAction(k: number, i: number): void {
    if (k >= i) throw new InvalidArgumentError(`file action ${i} reads the result of action ${k}, which does not run before it`, 'op');
  }
}

function checkInput(ctx: OpContext, index: number): void {
  if (index >= ctx.inputs.length) throw new InvalidArgumentError(`file op reads input ${index} but has ${ctx.inputs.length} inputs`, 'op');
}

function committedId(results: ActionResult[], k: number): string {
  const r = results[k];
  if (r?.kind !== 'committed') throw new Error(`internal: result of file action ${k} is not committed`);
  return r.id;
}

/** Host path to read the copy source from (the tree of the secondary input). */
async function secondaryPath(
  ctx: OpContext,
  index: bigint,
  results: ActionResult[],
  views: SnapshotView[],
  temps: string[],
  i: number,
): Promise<string> {
  const sec = fileActionInput(index);
  if (sec.kind === 'action') {
    const r = results[sec.index]!;
    if (r.kind === 'committed') {
      const v = await ctx.snapshotter.view(r.id);
      views.push(v);
      return v.path;
    }
    throw new Error(`internal: secondary input of file action ${i} is not committed`);
  }
  if (sec.kind === 'input') {
    const v = await ctx.snapshotter.view(ctx.inputs[sec.index]!);
    views.push(v);
    return v.path;
  }
  // Scratch: an empty tree.
  const key = newSnapshotKey(ctx.digest, `scratch${i}`);
  temps.push(key);
  const empty = await ctx.snapshotter.prepare(key);
  return empty.path;
}

async function cleanup(ctx: OpContext, results: ActionResult[], views: SnapshotView[], temps: string[], keep: Set<string>): Promise<void> {
  for (const v of views) await v.release().catch(() => undefined);
  for (const key of temps) await ctx.snapshotter.remove(key).catch(() => undefined);
  for (const r of results) {
    if (!r) continue;
    if (r.kind === 'active') await ctx.snapshotter.remove(r.key).catch(() => undefined);
    else if (r.kind === 'committed' && !keep.has(r.id)) await ctx.snapshotter.remove(r.id).catch(() => undefined);
  }
}

/** Runs one action, turning a filesystem error into "failed to <what>: <reason>". */
async function step(what: string, fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    throw OpFailure.wrap(`failed to ${what}`, err);
  }
}
