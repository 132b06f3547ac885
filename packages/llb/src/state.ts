import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { llb } from '@kiln/api';
import { walkPostOrder, type Digest } from '@kiln/common';
import { digestOf, marshalOp, type Definition, type Op } from './marshal.js';

/** One output of an op in a graph being built. */
export interface Output {
  readonly vertex: Vertex;
  readonly index: number;
}

/** An op plus the outputs it reads; marshalled on demand. */
export class Vertex {
  private cached?: { bytes: Uint8Array; digest: Digest };
  constructor(
    readonly op: Op,
    readonly inputs: readonly Output[],
    readonly metadata: MessageInitShape<typeof llb.OpMetadataSchema> = {},
  ) {}

  /** The op with its inputs' digests filled in; digests are stable. */
  marshal(): { bytes: Uint8Array; digest: Digest } {
    if (!this.cached) {
      // Inputs first, without recursion: a chain may be thousands of ops long.
      const ids = new WeakMap<Vertex, string>();
      let n = 0;
      const id = (v: Vertex) => ids.get(v) ?? (ids.set(v, String(n++)), ids.get(v)!);
      walkPostOrder<Vertex>(
        [this],
        id,
        (v) => (v.cached ? [] : v.inputs.map((i) => i.vertex)),
        (v) => v.marshalOwn(),
      );
    }
    return this.cached!;
  }

  /** Marshals this op once its inputs are marshalled. */
  private marshalOwn(): void {
    if (this.cached) return;
    const op = create(llb.OpSchema, {
      ...this.op,
      inputs: this.inputs.map((i) => create(llb.InputSchema, { digest: i.vertex.cached!.digest, index: BigInt(i.index) })),
    });
    const bytes = marshalOp(op);
    this.cached = { bytes, digest: digestOf(bytes) };
  }
}

export type PlatformInit = MessageInitShape<typeof llb.PlatformSchema>;

export interface StateOptions {
  description?: string;
  progressGroup?: string;
  ignoreCache?: boolean;
  sourceIndex?: number;
  ranges?: { startLine: number; endLine: number }[];
}

/**
 * An immutable filesystem state: scratch, or one output of an op. Every
 * method returns a new State; none mutates.
 */
export class State {
  private constructor(readonly output: Output | undefined, readonly platform?: PlatformInit) {}

  static scratch(): State {
    return new State(undefined);
  }

  static fromOutput(output: Output | undefined, platform?: PlatformInit): State {
    return new State(output, platform);
  }

  isScratch(): boolean {
    return this.output === undefined;
  }

  withPlatform(platform: PlatformInit): State {
    return new State(this.output, platform);
  }
}

/** Builds the metadata shape of an op from options. */
export function metadataOf(opts: StateOptions | undefined): MessageInitShape<typeof llb.OpMetadataSchema> {
  return {
    description: opts?.description ?? '',
    progressGroup: opts?.progressGroup ?? '',
    ignoreCache: opts?.ignoreCache ?? false,
    sourceIndex: opts?.sourceIndex ?? -1,
    ranges: opts?.ranges ?? [],
  };
}

export interface MarshalOptions {
  sources?: { filename: string; data: Uint8Array; language?: string }[];
}

/**
 * Marshals the graph behind `state` into a Definition: ops in dependency
 * order (inputs before users), each once, then the terminal op.
 */
export function marshal(state: State, opts: MarshalOptions = {}): Definition {
  const defs: Uint8Array[] = [];
  const metadata: Record<string, MessageInitShape<typeof llb.OpMetadataSchema>> = {};
  if (state.output) {
    walkPostOrder<Vertex>(
      [state.output.vertex],
      (v) => v.marshal().digest,
      (v) => v.inputs.map((i) => i.vertex),
      (v) => {
        const { bytes, digest } = v.marshal();
        defs.push(bytes);
        metadata[digest] = v.metadata;
      },
    );
  }
  const terminal = create(llb.OpSchema, {
    inputs: state.output ? [{ digest: state.output.vertex.marshal().digest, index: BigInt(state.output.index) }] : [],
  });
  defs.push(marshalOp(terminal));
  return create(llb.DefinitionSchema, {
    def: defs,
    metadata,
    sources: (opts.sources ?? []).map((s) => ({ filename: s.filename, data: s.data, language: s.language ?? 'Dockerfile' })),
  });
}
