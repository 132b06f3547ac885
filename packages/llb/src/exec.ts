import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { llb } from '@kiln/api';
import { State, Vertex, metadataOf, type Output, type StateOptions } from './state.js';

export interface ExecMountInit {
  dest: string;
  /** The mounted state; scratch when absent. */
  state?: State;
  readonly?: boolean;
  selector?: string;
  /** Make this mount an op output (the next output index). */
  output?: boolean;
  tmpfs?: boolean;
}

export interface ExecInit {
  env?: string[];
  cwd?: string;
  user?: string;
  network?: llb.NetMode;
  validExitCodes?: number[];
  mounts?: ExecMountInit[];
  mountTypeOverride?: llb.MountType;
}

/**
 * An ExecOp running `args` with `root` mounted read-write at / (output 0)
 * and the extra mounts of `init` (each `output` mount is the next output).
 */
export function execState(root: State, args: string[], init: ExecInit = {}, opts?: StateOptions): State {
  const inputs: Output[] = [];
  const indexOf = (s: State | undefined): bigint => {
    if (!s?.output) return -1n;
    const found = inputs.findIndex((o) => o.vertex === s.output!.vertex && o.index === s.output!.index);
    if (found >= 0) return BigInt(found);
    inputs.push(s.output);
    return BigInt(inputs.length - 1);
  };
  let nextOutput = 1n;
  const mounts: MessageInitShape<typeof llb.MountSchema>[] = [{ dest: '/', input: indexOf(root), output: 0n, mountType: llb.MountType.BIND }];
  for (const m of init.mounts ?? []) {
    mounts.push({
      dest: m.dest,
      input: m.tmpfs ? -1n : indexOf(m.state),
      selector: m.selector ?? '',
      readonly: m.readonly ?? false,
      output: m.output ? nextOutput++ : -1n,
      mountType: m.tmpfs ? llb.MountType.TMPFS : (init.mountTypeOverride ?? llb.MountType.BIND),
    });
  }
  const op = create(llb.OpSchema, {
    platform: root.platform,
    op: {
      case: 'exec',
      value: {
        meta: { args, env: init.env ?? [], cwd: init.cwd ?? '/', user: init.user ?? '', validExitCodes: init.validExitCodes ?? [] },
        mounts,
        network: init.network ?? llb.NetMode.SANDBOX,
      },
    },
  });
  return State.fromOutput({ vertex: new Vertex(op, inputs, metadataOf(opts)), index: 0 }, root.platform);
}

/** Output `index` of the op behind `s` (e.g. an exec's extra output mount). */
export function outputOf(s: State, index: number): State {
  return State.fromOutput({ vertex: s.output!.vertex, index });
}
