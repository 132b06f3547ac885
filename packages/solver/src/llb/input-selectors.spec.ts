import { execState, FileChain, image, local, marshal, merge, parseDefinition, State, type ParsedOp } from '@kiln/llb';
import { describe, expect, it } from 'vitest';
import { inputSelectors } from './input-selectors.js';

/** The op that produces `s`, parsed from its marshalled definition. */
function opOf(s: State): ParsedOp {
  const def = parseDefinition(marshal(s));
  return def.ops.get(def.result!.digest as never)!;
}

describe('inputSelectors', () => {
  const ctx = local('context');
  const base = image('docker.io/library/busybox:latest');

  it('selects the src paths copies read from a source, never the base they copy onto', () => {
    const op = opOf(
      FileChain.start()
        .copy(ctx, '/a.txt', '/a')
        .copy(ctx, '/src/*.go', '/src/', { allowWildcard: true, followSymlink: true })
        .apply(base),
    );
    const [baseSel, ctxSel] = inputSelectors(op.op);
    expect(baseSel).toBeUndefined();
    expect(ctxSel).toEqual([
      { path: '/a.txt', wildcard: false, followSymlink: false },
      { path: '/src/*.go', wildcard: true, followSymlink: true },
    ]);
  });

  it('reads a --parents copy from its pivot, and an input used as a base as a whole', () => {
    const parents = opOf(FileChain.start().copy(ctx, '/app/./x/*.txt', '/dst/', { parents: true, allowWildcard: true }).apply(State.scratch()));
    expect(inputSelectors(parents.op)).toEqual([[{ path: '/app', wildcard: false, followSymlink: false }]]);
    const onItself = opOf(FileChain.start().copy(ctx, '/a', '/b').apply(ctx));
    expect(inputSelectors(onItself.op)).toEqual([undefined]);
  });

  it('selects exec mounts with a selector; the root and "/" mounts are whole', () => {
    const op = opOf(
      execState(base, ['true'], {
        mounts: [
          { dest: '/src', state: ctx, selector: '/app', readonly: true },
          { dest: '/all', state: image('docker.io/library/alpine:latest'), selector: '/', readonly: true },
        ],
      }),
    );
    const sels = inputSelectors(op.op);
    expect(sels).toHaveLength(3);
    expect(sels.filter((s) => s === undefined)).toHaveLength(2);
    expect(sels).toContainEqual([{ path: '/app', wildcard: false, followSymlink: true }]);
  });

  it('keys merge inputs whole', () => {
    const op = opOf(merge([FileChain.start().mkdir('/x', 0o755).apply(State.scratch()), FileChain.start().mkdir('/y', 0o755).apply(State.scratch())]));
    expect(op.op.op.case).toBe('merge');
    expect(inputSelectors(op.op).every((s) => s === undefined)).toBe(true);
  });

  it('has nothing to select for a source', () => {
    expect(inputSelectors(opOf(base).op)).toEqual([]);
  });
});
