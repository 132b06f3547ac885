import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { llb } from '@kiln/api';
import { State, Vertex, metadataOf, type Output, type StateOptions } from './state.js';

type CopyInit = Omit<MessageInitShape<typeof llb.FileActionCopySchema>, 'src' | 'dest' | '$typeName'>;
type ChownInit = MessageInitShape<typeof llb.ChownOptSchema>;

/** One action of a FileOp under construction; chain with the methods below. */
interface PendingAction {
  action: MessageInitShape<typeof llb.FileActionSchema>['action'];
  /** The state this action reads as its secondary input (copy source). */
  secondary?: State;
}

/**
 * A chain of file actions applied in order to `base` (mkdir, mkfile, rm,
 * copy, symlink), turned into one FileOp by `apply`.
 */
export class FileChain {
  private constructor(private readonly actions: readonly PendingAction[]) {}

  static start(): FileChain {
    return new FileChain([]);
  }

  copy(from: State, src: string, dest: string, opts: CopyInit = {}): FileChain {
    return this.add({ action: { case: 'copy', value: { mode: -1, timestamp: -1n, ...opts, src, dest } }, secondary: from });
  }

  mkdir(path: string, mode: number, opts: { makeParents?: boolean; owner?: ChownInit; timestamp?: bigint } = {}): FileChain {
    return this.add({ action: { case: 'mkdir', value: { path, mode, makeParents: opts.makeParents ?? false, owner: opts.owner, timestamp: opts.timestamp ?? -1n } } });
  }

  mkfile(path: string, mode: number, data: Uint8Array, opts: { owner?: ChownInit; timestamp?: bigint } = {}): FileChain {
    return this.add({ action: { case: 'mkfile', value: { path, mode, data, owner: opts.owner, timestamp: opts.timestamp ?? -1n } } });
  }

  rm(path: string, opts: { allowNotFound?: boolean; allowWildcard?: boolean } = {}): FileChain {
    return this.add({ action: { case: 'rm', value: { path, ...opts } } });
  }

  symlink(oldpath: string, newpath: string, opts: { owner?: ChownInit; timestamp?: bigint } = {}): FileChain {
    return this.add({ action: { case: 'symlink', value: { oldpath, newpath, owner: opts.owner, timestamp: opts.timestamp ?? -1n } } });
  }

  get length(): number {
    return this.actions.length;
  }

  /** Applies the chain to `base`, producing one FileOp; its output is the last action's result. */
  apply(base: State, opts?: StateOptions): State {
    const inputs: Output[] = [];
    const indexOf = (s: State): number => {
      if (!s.output) return -1;
      const found = inputs.findIndex((o) => o.vertex === s.output!.vertex && o.index === s.output!.index);
      if (found >= 0) return found;
      inputs.push(s.output);
      return inputs.length - 1;
    };
    const baseIndex = indexOf(base);
    const actions = this.actions.map((a, i) => ({
      // The first action reads the base; later ones read the previous action's result.
      input: i === 0 ? BigInt(baseIndex) : BigInt(-(i - 1) - 2),
      secondaryInput: a.secondary ? BigInt(indexOf(a.secondary)) : -1n,
      output: i === this.actions.length - 1 ? 0n : -1n,
      action: a.action,
    }));
    const op = create(llb.OpSchema, { op: { case: 'file', value: { actions } }, platform: base.platform });
    return State.fromOutput({ vertex: new Vertex(op, inputs, metadataOf(opts)), index: 0 }, base.platform);
  }

  private add(a: PendingAction): FileChain {
    return new FileChain([...this.actions, a]);
  }
}

/**
 * Resolves a FileAction input index: >= 0 is an op input, -1 scratch, and
 * -(k+2) the result of action k of the same op.
 */
export function fileActionInput(index: bigint): { kind: 'input'; index: number } | { kind: 'scratch' } | { kind: 'action'; index: number } {
  if (index >= 0n) return { kind: 'input', index: Number(index) };
  if (index === -1n) return { kind: 'scratch' };
  return { kind: 'action', index: Number(-index - 2n) };
}
