import type { llb } from '@kiln/api';
import { fileActionInput } from '@kiln/llb';

/** A path an op reads from one input (WorkerService.Checksum's PathSelector). */
export interface InputSelector {
  path: string;
  wildcard: boolean;
  followSymlink: boolean;
}

/**
 * Per op input, the paths the op reads of it, when those are all it reads
 * (BuildKit's cache selectors): the src of FileOp copies (wildcards and
 * `--parents` pivots included) and the selector of exec mounts. Such an
 * input can be keyed by a checksum of those paths instead of its whole
 * key, so changing files the op never reads does not invalidate it.
 * Undefined for an input the op reads as a whole (a copy's or mkdir's
 * base, an exec root, a mount of "/", merge layers, ...).
 */
export function inputSelectors(op: llb.Op): (InputSelector[] | undefined)[] {
  const selected: (InputSelector[] | undefined)[] = op.inputs.map(() => []);
  const whole = (i: number) => {
    if (i >= 0 && i < selected.length) selected[i] = undefined;
  };
  const add = (i: number, s: InputSelector) => selected[i]?.push(s);
  switch (op.op.case) {
    case 'file':
      for (const a of op.op.value.actions) {
        const base = fileActionInput(a.input);
        if (base.kind === 'input') whole(base.index);
        const secondary = fileActionInput(a.secondaryInput);
        if (secondary.kind !== 'input') continue;
        if (a.action.case === 'copy') add(secondary.index, copySelector(a.action.value));
        else whole(secondary.index);
      }
      break;
    case 'exec':
      for (const m of op.op.value.mounts) {
        if (m.input < 0n) continue;
        const i = Number(m.input);
        const path = m.selector.replace(/\/+$/, '');
        if (path === '' || path === '.' || path === '/.') whole(i);
        else add(i, { path: m.selector, wildcard: false, followSymlink: true });
      }
      break;
    default:
      op.inputs.forEach((_, i) => whole(i));
  }
  return selected.map((s) => (s && s.length > 0 ? s : undefined));
}

/**
 * What a copy reads of its source: `src` (a glob with allowWildcard), or
 * for `--parents` (`PIVOT/./PATH`) the pivot's whole tree, a superset of
 * what PATH matches below it.
 */
function copySelector(c: llb.FileActionCopy): InputSelector {
  if (c.parents) {
    const at = c.src.indexOf('/./');
    return { path: at >= 0 ? c.src.slice(0, at) || '/' : '/', wildcard: false, followSymlink: c.followSymlink };
  }
  return { path: c.src, wildcard: c.allowWildcard, followSymlink: c.followSymlink };
}
