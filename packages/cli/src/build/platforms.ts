import { defaultPlatform, formatPlatform, normalizePlatform, parsePlatform } from '@kiln/registry';
import { UsageError } from '../flags/usage-error.js';

/** Go's GOOS values: the operating systems an image platform may name (containerd's check). */
const KNOWN_OS = new Set(['aix', 'android', 'darwin', 'dragonfly', 'freebsd', 'hurd', 'illumos', 'ios', 'js', 'linux', 'nacl', 'netbsd', 'openbsd', 'plan9', 'solaris', 'wasip1', 'windows', 'zos']);
/** Go's GOARCH values (after normalizing aliases such as x86_64 and aarch64). */
const KNOWN_ARCH = new Set(['386', 'amd64', 'amd64p32', 'arm', 'arm64', 'arm64be', 'armbe', 'loong64', 'mips', 'mips64', 'mips64le', 'mips64p32', 'mips64p32le', 'mipsle', 'ppc', 'ppc64', 'ppc64le', 'riscv', 'riscv64', 's390', 's390x', 'sparc', 'sparc64', 'wasm']);

/**
 * One `--platform` value, normalized as buildx does: `local` is this
 * machine's platform; aliases become their canonical names (x86_64 ->
 * amd64, aarch64 -> arm64, armhf -> arm/v7); an unknown operating system
 * or architecture is a UsageError naming the value, never sent to the
 * daemon (which would only fail later, finding no worker).
 */
export function normalizePlatformFlag(value: string, flag = '--platform'): string {
  const v = value.trim();
  if (v.toLowerCase() === 'local') return formatPlatform(defaultPlatform());
  let p;
  try {
    p = normalizePlatform(parsePlatform(v, flag));
  } catch {
    throw new UsageError(`invalid argument "${value}" for "${flag}" flag: want os/arch[/variant] or "local"`, flag);
  }
  if (!KNOWN_OS.has(p.os)) throw new UsageError(`invalid argument "${value}" for "${flag}" flag: unknown operating system "${p.os}" (e.g. linux, windows)`, flag);
  if (!KNOWN_ARCH.has(p.architecture)) {
    throw new UsageError(`invalid argument "${value}" for "${flag}" flag: unknown architecture "${p.architecture}" (e.g. amd64, arm64, arm, 386, ppc64le, s390x, riscv64)`, flag);
  }
  return formatPlatform(p);
}
