/**
 * Kiln's default seccomp profile for build steps: allow everything except
 * the syscalls Docker's and BuildKit's default profiles also refuse to an
 * unprivileged container (kernel modules, kexec, reboot, clock and swap
 * control, mount and namespace games, tracing other processes, kernel
 * keyrings, BPF, perf). Refused calls fail with EPERM instead of killing the
 * process, so tools that probe for them degrade gracefully.
 *
 * It is a deny list, smaller than Docker's allow list on purpose: most of
 * these need CAP_SYS_ADMIN (which a sandboxed step lacks) anyway; the
 * profile closes the ones reachable without it (unshare of user namespaces,
 * keyctl, bpf, userfaultfd, perf_event_open, ptrace of siblings).
 * runc ignores names its libseccomp does not know on this architecture.
 * `--security=insecure` runs without it.
 */
export const DENIED_SYSCALLS = [
  // kernel modules and kexec
  'create_module', 'delete_module', 'finit_module', 'init_module', 'query_module', 'get_kernel_syms',
  'kexec_file_load', 'kexec_load',
  // machine state
  'reboot', 'swapon', 'swapoff', 'acct', 'settimeofday', 'stime', 'clock_settime', 'clock_adjtime', 'adjtimex',
  'ioperm', 'iopl', 'vm86', 'vm86old', 'nfsservctl', 'sysfs', '_sysctl', 'uselib', 'ustat', 'lookup_dcookie',
  // mounts and namespaces
  'mount', 'umount', 'umount2', 'pivot_root', 'setns', 'unshare',
  'fsopen', 'fsconfig', 'fsmount', 'fspick', 'move_mount', 'open_tree', 'mount_setattr',
  'open_by_handle_at', 'name_to_handle_at', 'quotactl',
  // other processes, keyrings, kernel interfaces
  'ptrace', 'process_vm_readv', 'process_vm_writev', 'kcmp',
  'add_key', 'request_key', 'keyctl',
  'bpf', 'perf_event_open', 'userfaultfd',
  // NUMA placement (Docker refuses without CAP_SYS_NICE)
  'mbind', 'get_mempolicy', 'set_mempolicy', 'move_pages',
] as const;

/** EPERM: what a denied syscall returns. */
const EPERM = 1;

/** Seccomp architectures of this host (native first), as OCI names them. */
function architectures(): string[] {
  switch (process.arch) {
    case 'x64':
      return ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'];
    case 'arm64':
      return ['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM'];
    case 'arm':
      return ['SCMP_ARCH_ARM'];
    case 'ppc64':
      return ['SCMP_ARCH_PPC64LE'];
    case 's390x':
      return ['SCMP_ARCH_S390X', 'SCMP_ARCH_S390'];
    case 'riscv64':
      return ['SCMP_ARCH_RISCV64'];
    default:
      return [];
  }
}

/** The `linux.seccomp` section of the OCI runtime config. */
export function defaultSeccompProfile(): Record<string, unknown> {
  return {
    defaultAction: 'SCMP_ACT_ALLOW',
    architectures: architectures(),
    syscalls: [{ names: [...DENIED_SYSCALLS], action: 'SCMP_ACT_ERRNO', errnoRet: EPERM }],
  };
}
