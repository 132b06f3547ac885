/**
 * The Executor seam: runs one process in a container whose root filesystem
 * and mounts the worker has already prepared as host paths. Backends (runc,
 * containerd) only turn this into their runtime's spec; they never touch
 * snapshots, refs or LLB.
 */
export interface Executor {
  /**
   * Runs `spec.process` to completion and resolves with its exit code; a
   * non-zero code is a result, not an error (the worker decides which codes
   * fail the step).
   *
   * Ownership: `rootfs` and bind sources belong to the caller and stay
   * valid until this resolves; the executor must not keep references to them
   * afterwards. A backend whose runtime mounts snapshots itself may run the
   * root from the snapshot's own mounts and take the caller's mount of it
   * down (the containerd worker: its snapshotter knows the path); the caller
   * only commits or removes that snapshot afterwards. It may create mount-point stubs (e.g. /proc, /dev, the
   * destinations of `mounts`) in a writable rootfs but must remove the ones
   * it created before resolving, so they do not leak into the committed
   * snapshot.
   *
   * Output: stdout/stderr bytes are delivered through the callbacks in
   * order, possibly in arbitrary chunks, and never after this resolves.
   *
   * Cancellation: when `signal` aborts, the process and everything it
   * started are killed and the promise rejects with a CanceledError once
   * they are gone.
   *
   * Errors: rejects (KilnError) only when the process could not be started
   * or the runtime failed; UnimplementedError when the backend cannot run
   * processes yet. Many runs may be in flight at once on one executor.
   */
  run(spec: ExecSpec, io?: ExecIO): Promise<ExecResult>;

  /**
   * Optional: removes what an earlier process on the same state left (e.g.
   * containers of a killed daemon). The worker calls it once at start and
   * waits for it before running ops and before closing; it never rejects.
   */
  reapStale?(): Promise<void>;
}

export interface ExecSpec {
  /** Host path of the root filesystem (a prepared snapshot). */
  rootfs: string;
  /** Mount the rootfs read-only. */
  readonlyRootfs: boolean;
  /**
   * Extra mounts in order, on top of the rootfs. The executor adds the
   * standard ones itself (/proc, /dev, /dev/pts, /dev/shm, /sys).
   */
  mounts: ExecMount[];
  process: ExecProcess;
  /**
   * "sandbox": a network namespace of its own (the one in
   * `networkNamespace` when set, else a fresh one with loopback only);
   * "host": the host's; "none": a fresh one with no interfaces but loopback.
   */
  network: 'sandbox' | 'host' | 'none';
  /**
   * Optional, only with network "sandbox": host path of a network namespace
   * the worker created and wired for this run (e.g.
   * `<root>/exec/netns/<id>`, a bind-mounted nsfs file). The process joins
   * it instead of getting a fresh one (runc: `linux.namespaces` entry
   * `{ type: "network", path }`). The worker owns it: it stays valid until
   * `run` resolves and the executor must not remove it.
   */
  networkNamespace?: string;
  /** Hostname inside the container. */
  hostname: string;
  /**
   * "sandbox": the default capability set, a default seccomp profile where
   * the runtime supports it, masked /proc paths and a read-only /sys.
   * "insecure" (privileged; the worker checked the `security.insecure`
   * entitlement): every capability, no seccomp, nothing masked, /sys
   * writable, every device allowed.
   */
  security: 'sandbox' | 'insecure';
  /** Resource limits (ulimits); the runtime's defaults apply to the rest. */
  rlimits: ExecRlimit[];
  /** Size of /dev/shm in bytes (buildx `--shm-size`); unset: 64 MiB. */
  shmSizeBytes?: number;
}

export interface ExecRlimit {
  /** Lower-case ulimit name as Docker spells it: "nofile", "nproc", "core", ... */
  name: string;
  soft: number;
  hard: number;
}

/**
 * A bind `source` may be a directory, a regular file (secrets) or a unix
 * socket (the forwarded SSH agent); the destination stub is created with
 * the same kind.
 */
export type ExecMount =
  | { type: 'bind'; source: string; dest: string; readonly: boolean }
  | { type: 'tmpfs'; dest: string; sizeBytes?: number };

export interface ExecProcess {
  /** argv; args[0] is resolved through PATH in `env` by the runtime. */
  args: string[];
  /** "KEY=value" entries; the worker has already added a default PATH. */
  env: string[];
  /** Absolute working directory; the worker has created it in the rootfs. */
  cwd: string;
  /** Numeric ids, resolved by the worker from the rootfs's /etc/passwd and /etc/group. */
  user: { uid: number; gid: number; additionalGids: number[] };
}

export interface ExecIO {
  stdout?: (chunk: Uint8Array) => void;
  stderr?: (chunk: Uint8Array) => void;
  signal?: AbortSignal;
}

export interface ExecResult {
  exitCode: number;
}
