import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { WorkerPlatform } from './worker.js';

/** Where the kernel lists binfmt_misc handlers. */
export const BINFMT_MISC_DIR = '/proc/sys/fs/binfmt_misc';

/** qemu-user's binfmt names (`qemu-<arch>`, as Debian's qemu-user-static registers them) -> OCI platforms. */
const QEMU_PLATFORMS: Record<string, WorkerPlatform> = {
  aarch64: { os: 'linux', architecture: 'arm64' },
  arm: { os: 'linux', architecture: 'arm', variant: 'v7' },
  x86_64: { os: 'linux', architecture: 'amd64' },
  i386: { os: 'linux', architecture: '386' },
  riscv64: { os: 'linux', architecture: 'riscv64' },
  ppc64le: { os: 'linux', architecture: 'ppc64le' },
  s390x: { os: 'linux', architecture: 's390x' },
  mips64el: { os: 'linux', architecture: 'mips64le' },
  loongarch64: { os: 'linux', architecture: 'loong64' },
};

/**
 * The platforms this machine runs through an emulator: each enabled
 * `qemu-<arch>` handler in binfmt_misc whose interpreter is usable inside
 * a container (flag F: the kernel opened it at registration) or exists on
 * the host. Never throws: no binfmt_misc (not mounted, no access) means
 * no emulation.
 */
export function emulatedPlatforms(dir = BINFMT_MISC_DIR): WorkerPlatform[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const out: WorkerPlatform[] = [];
  for (const name of names.sort()) {
    const platform = name.startsWith('qemu-') ? QEMU_PLATFORMS[name.slice('qemu-'.length)] : undefined;
    if (!platform) continue;
    let entry: string;
    try {
      entry = readFileSync(path.join(dir, name), 'utf8');
    } catch {
      continue;
    }
    const lines = entry.split('\n');
    if (lines[0]?.trim() !== 'enabled') continue;
    const flags = lines.find((l) => l.startsWith('flags:'))?.slice('flags:'.length).trim() ?? '';
    const interpreter = lines.find((l) => l.startsWith('interpreter '))?.slice('interpreter '.length).trim() ?? '';
    if (flags.includes('F') || (interpreter && existsSync(interpreter))) out.push({ ...platform });
  }
  return out;
}

/** The host's platform first, then the emulated ones it does not already run. */
export function nativeAndEmulated(host: WorkerPlatform, emulated: readonly WorkerPlatform[]): WorkerPlatform[] {
  const key = (p: WorkerPlatform) => `${p.os}/${p.architecture}/${p.variant ?? ''}`;
  const seen = new Set([key(host)]);
  const out = [host];
  for (const p of emulated) if (!seen.has(key(p))) (seen.add(key(p)), out.push(p));
  return out;
}
