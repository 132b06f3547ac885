import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { llb } from '@kiln/api';
import { State, Vertex, type Output } from '@kiln/llb';

/** One mount of `execOp`: any LLB mount type with its options. */
export interface ExecOpMount {
  dest: string;
  /** Mounted (bind) or seeding (cache) state; scratch when absent. */
  state?: State;
  selector?: string;
  readonly?: boolean;
  /** Make this mount an op output (the next output index). */
  output?: boolean;
  type?: 'bind' | 'tmpfs' | 'cache' | 'secret' | 'ssh';
  tmpfsSizeBytes?: number;
  cache?: { id: string; sharing?: 'shared' | 'private' | 'locked' };
  secret?: { id: string; uid?: number; gid?: number; mode?: number; optional?: boolean };
  ssh?: { id?: string; uid?: number; gid?: number; mode?: number; optional?: boolean };
}

/** Everything an ExecOp can say, for the worker suites (the @kiln/llb builder covers the Dockerfile's needs). */
export interface ExecOpInit {
  env?: string[];
  cwd?: string;
  user?: string;
  hostname?: string;
  /** /etc/hosts entries (`--add-host`). */
  extraHosts?: { host: string; ip: string }[];
  network?: 'sandbox' | 'host' | 'none';
  security?: 'sandbox' | 'insecure';
  ulimits?: { name: string; soft: number; hard: number }[];
  secretEnv?: { id: string; name: string; optional?: boolean }[];
  validExitCodes?: number[];
  mounts?: ExecOpMount[];
  /** Selector of the root mount: a subdirectory of `root` as `/`. */
  rootSelector?: string;
}

const MOUNT_TYPES = {
  bind: llb.MountType.BIND,
  tmpfs: llb.MountType.TMPFS,
  cache: llb.MountType.CACHE,
  secret: llb.MountType.SECRET,
  ssh: llb.MountType.SSH,
} as const;

const SHARING = { shared: llb.CacheSharing.SHARED, private: llb.CacheSharing.PRIVATE, locked: llb.CacheSharing.LOCKED } as const;

/** An ExecOp running `args` on `root` (read-write at /, output 0) plus `init.mounts`. */
export function execOp(root: State, args: string[], init: ExecOpInit = {}): State {
  const inputs: Output[] = [];
  const indexOf = (s: State | undefined): bigint => {
    if (!s?.output) return -1n;
    const found = inputs.findIndex((o) => o.vertex === s.output!.vertex && o.index === s.output!.index);
    if (found >= 0) return BigInt(found);
    inputs.push(s.output);
    return BigInt(inputs.length - 1);
  };
  let nextOutput = 1n;
  const mounts: MessageInitShape<typeof llb.MountSchema>[] = [{ dest: '/', input: indexOf(root), output: 0n, mountType: llb.MountType.BIND, selector: init.rootSelector ?? '' }];
  for (const m of init.mounts ?? []) {
    const type = m.type ?? 'bind';
    const takesInput = type === 'bind' || type === 'cache';
    mounts.push({
      dest: m.dest,
      input: takesInput ? indexOf(m.state) : -1n,
      selector: m.selector ?? '',
      readonly: m.readonly ?? false,
      output: m.output ? nextOutput++ : -1n,
      mountType: MOUNT_TYPES[type],
      tmpfsOpt: m.tmpfsSizeBytes ? { size: BigInt(m.tmpfsSizeBytes) } : undefined,
      cacheOpt: m.cache ? { id: m.cache.id, sharing: SHARING[m.cache.sharing ?? 'shared'] } : undefined,
      secretOpt: m.secret ? { uid: 0, gid: 0, mode: 0o400, optional: false, ...m.secret } : undefined,
      sshOpt: m.ssh ? { id: 'default', uid: 0, gid: 0, mode: 0o600, optional: false, ...m.ssh } : undefined,
    });
  }
  const op = create(llb.OpSchema, {
    platform: root.platform,
    op: {
      case: 'exec',
      value: {
        meta: {
          args,
          env: init.env ?? [],
          cwd: init.cwd ?? '/',
          user: init.user ?? '',
          hostname: init.hostname ?? '',
          extraHosts: init.extraHosts ?? [],
          ulimits: (init.ulimits ?? []).map((u) => ({ name: u.name, soft: BigInt(u.soft), hard: BigInt(u.hard) })),
          validExitCodes: init.validExitCodes ?? [],
        },
        mounts,
        network: init.network === 'host' ? llb.NetMode.HOST : init.network === 'none' ? llb.NetMode.NONE : llb.NetMode.SANDBOX,
        security: init.security === 'insecure' ? llb.SecurityMode.INSECURE : llb.SecurityMode.SANDBOX,
        secretEnv: (init.secretEnv ?? []).map((e) => ({ optional: false, ...e })),
      },
    },
  });
  return State.fromOutput({ vertex: new Vertex(op, inputs, {}), index: 0 }, root.platform);
}
