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
  /** tmpfs size limit in bytes (0: the runtime's default). */
  tmpfsSize?: bigint;
  /** A persistent cache directory (`RUN --mount=type=cache`). */
  cache?: { id: string; sharing: llb.CacheSharing };
}

/** A secret file mount (`RUN --mount=type=secret`); no input, never an output. */
export interface ExecSecretInit {
  id: string;
  /** File path in the container; absent for an env-only secret. */
  dest?: string;
  /** Exposes the secret as this environment variable (SecretEnv), not in Meta.env. */
  env?: string;
  uid?: number;
  gid?: number;
  /** Default 0o400. */
  mode?: number;
  optional?: boolean;
}

/** An SSH agent socket mount (`RUN --mount=type=ssh`). */
export interface ExecSshInit {
  /** Default "default". */
  id?: string;
  /** Default /run/buildkit/ssh_agent.N (N: its index among the ssh mounts). */
  dest?: string;
  uid?: number;
  gid?: number;
  /** Default 0o600. */
  mode?: number;
  optional?: boolean;
}

export interface ExecInit {
  env?: string[];
  cwd?: string;
  user?: string;
  network?: llb.NetMode;
  security?: llb.SecurityMode;
  validExitCodes?: number[];
  mounts?: ExecMountInit[];
  secrets?: ExecSecretInit[];
  ssh?: ExecSshInit[];
  /** Hostname inside the step (empty: the worker's default). */
  hostname?: string;
  /** Extra /etc/hosts entries (`--add-host`). */
  extraHosts?: { host: string; ip: string }[];
  /** Resource limits of the step's processes (buildx `--ulimit`; -1 is unlimited). */
  ulimits?: { name: string; soft: number; hard: number }[];
  /** Size of the step's /dev/shm in bytes (buildx `--shm-size`); 0 or unset: the runtime's default. */
  shmSizeBytes?: number;
  /** Proxy settings for the step (BuildKit's ProxyEnv): in its env, not in its cache key. */
  proxyEnv?: { httpProxy?: string; httpsProxy?: string; ftpProxy?: string; noProxy?: string; allProxy?: string };
  mountTypeOverride?: llb.MountType;
  /** Order the state mounts by destination, as BuildKit's LLB client does (default: as given). */
  sortMounts?: boolean;
}

/**
 * An ExecOp running `args` with `root` mounted read-write at / (output 0)
 * and the extra mounts of `init` (each `output` mount is the next output).
 * State mounts come first (root, then in order, or by destination with
 * `sortMounts`), then secret mounts, then ssh mounts, as BuildKit's client;
 * the first ssh socket is exported as SSH_AUTH_SOCK unless env sets it.
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
  const stateMounts: (ExecMountInit & { root?: true })[] = [{ dest: '/', state: root, output: true, root: true }, ...(init.mounts ?? [])];
  if (init.sortMounts) stateMounts.sort((a, b) => (a.dest < b.dest ? -1 : a.dest > b.dest ? 1 : 0));
  let nextOutput = 0n;
  const mounts: MessageInitShape<typeof llb.MountSchema>[] = stateMounts.map((m) => {
    if (m.root) return { dest: '/', input: indexOf(root), output: nextOutput++, mountType: llb.MountType.BIND };
    const type = m.tmpfs ? llb.MountType.TMPFS : m.cache ? llb.MountType.CACHE : (init.mountTypeOverride ?? llb.MountType.BIND);
    return {
      dest: m.dest,
      input: m.tmpfs ? -1n : indexOf(m.state),
      selector: m.selector ?? '',
      readonly: m.readonly ?? false,
      output: m.output && !m.readonly && !m.tmpfs && !m.cache ? nextOutput++ : -1n,
      mountType: type,
      ...(m.tmpfs ? { tmpfsOpt: { size: m.tmpfsSize ?? 0n } } : {}),
      ...(m.cache ? { cacheOpt: { id: m.cache.id, sharing: m.cache.sharing } } : {}),
    };
  });
  const secretEnv: MessageInitShape<typeof llb.SecretEnvSchema>[] = [];
  for (const s of init.secrets ?? []) {
    if (s.env !== undefined) secretEnv.push({ id: s.id, name: s.env, optional: s.optional ?? false });
    if (s.dest !== undefined) {
      mounts.push({
        dest: s.dest,
        input: -1n,
        output: -1n,
        mountType: llb.MountType.SECRET,
        secretOpt: { id: s.id, uid: s.uid ?? 0, gid: s.gid ?? 0, mode: s.mode ?? 0o400, optional: s.optional ?? false },
      });
    }
  }
  const env = [...(init.env ?? [])];
  const ssh = (init.ssh ?? []).map((s, i) => ({ ...s, dest: s.dest || `/run/buildkit/ssh_agent.${i}` }));
  if (ssh.length > 0 && !env.some((e) => e.startsWith('SSH_AUTH_SOCK='))) env.push(`SSH_AUTH_SOCK=${ssh[0]!.dest}`);
  for (const s of ssh) {
    mounts.push({
      dest: s.dest,
      input: -1n,
      output: -1n,
      mountType: llb.MountType.SSH,
      sshOpt: { id: s.id || 'default', uid: s.uid ?? 0, gid: s.gid ?? 0, mode: s.mode ?? 0o600, optional: s.optional ?? false },
    });
  }
  const op = create(llb.OpSchema, {
    platform: root.platform,
    op: {
      case: 'exec',
      value: {
        meta: {
          args,
          env,
          cwd: init.cwd ?? '/',
          user: init.user ?? '',
          hostname: init.hostname ?? '',
          extraHosts: (init.extraHosts ?? []).map((h) => ({ host: h.host, ip: h.ip })),
          validExitCodes: init.validExitCodes ?? [],
          ulimits: (init.ulimits ?? []).map((u) => ({ name: u.name, soft: BigInt(u.soft), hard: BigInt(u.hard) })),
          shmSize: BigInt(init.shmSizeBytes ?? 0),
          ...(init.proxyEnv ? { proxyEnv: init.proxyEnv } : {}),
        },
        mounts,
        network: init.network ?? llb.NetMode.SANDBOX,
        security: init.security ?? llb.SecurityMode.UNSPECIFIED,
        secretEnv,
      },
    },
  });
  return State.fromOutput({ vertex: new Vertex(op, inputs, metadataOf(opts)), index: 0 }, root.platform);
}

/** Output `index` of the op behind `s` (e.g. an exec's extra output mount). */
export function outputOf(s: State, index: number): State {
  return State.fromOutput({ vertex: s.output!.vertex, index });
}
