import { InvalidArgumentError, NotFoundError } from '@kiln/common';
import type { Descriptor } from './media.js';
import { formatReference, type Reference } from './reference.js';

/** An OCI platform. */
export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
}

/** Parses "os/arch[/variant]" (e.g. "linux/arm64/v8"); throws InvalidArgumentError naming `field`. */
export function parsePlatform(spec: string, field = 'platform'): Platform {
  const parts = spec.trim().split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !/^[A-Za-z0-9_.-]+$/.test(p))) {
    throw new InvalidArgumentError(`invalid platform "${spec}": want os/arch[/variant]`, field);
  }
  const [os, architecture, variant] = parts as [string, string, string?];
  return variant ? { os, architecture, variant } : { os, architecture };
}

/** "os/arch[/variant]". */
export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/**
 * Normalizes like containerd/Docker: lower case; x86_64 -> amd64, aarch64 ->
 * arm64, i386 -> 386, armhf -> arm/v7, armel -> arm/v6; the default variants
 * are dropped or filled in (arm64 "v8" is the default and is dropped; arm
 * without a variant is "v7"; amd64 "v1" is dropped).
 */
export function normalizePlatform(p: Platform): Platform {
  let os = p.os.toLowerCase();
  if (os === 'macos') os = 'darwin';
  let arch = p.architecture.toLowerCase();
  let variant = (p.variant ?? '').toLowerCase();
  switch (arch) {
    case 'i386':
      arch = '386';
      variant = '';
      break;
    case 'x86_64':
    case 'x86-64':
    case 'amd64':
      arch = 'amd64';
      if (variant === 'v1') variant = '';
      break;
    case 'aarch64':
    case 'arm64':
      arch = 'arm64';
      if (variant === '8' || variant === 'v8' || variant === 'v8.0') variant = '';
      break;
    case 'armhf':
      arch = 'arm';
      variant = 'v7';
      break;
    case 'armel':
      arch = 'arm';
      variant = 'v6';
      break;
    case 'arm':
      if (variant === '' || variant === '7') variant = 'v7';
      else if (/^[5-8]$/.test(variant)) variant = `v${variant}`;
      break;
  }
  const out: Platform = { os, architecture: arch };
  if (variant) out.variant = variant;
  if (p['os.version']) out['os.version'] = p['os.version'];
  if (p['os.features']) out['os.features'] = p['os.features'];
  return out;
}

/** The platform this process runs on (arm: v7 unless told otherwise). */
export function defaultPlatform(): Platform {
  const arch: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };
  const os = process.platform === 'win32' ? 'windows' : process.platform;
  return normalizePlatform({ os, architecture: arch[process.arch] ?? process.arch });
}

/**
 * The platforms that can run on `want`, best first (containerd's
 * `platforms.Only`): the exact platform, then lower variants of the same
 * architecture (amd64 v3 -> v2 -> v1; arm v7 -> v6 -> v5; arm64 v9 -> v8),
 * then the 32-bit architecture the CPU also runs (amd64 -> 386, arm64 ->
 * arm v8..v5). All normalized.
 */
export function compatiblePlatforms(want: Platform): Platform[] {
  const p = normalizePlatform(want);
  const out: Platform[] = [p];
  const with_ = (architecture: string, variant?: string): Platform => (variant ? { os: p.os, architecture, variant } : { os: p.os, architecture });
  const level = (v: string | undefined) => (v ? Number.parseInt(v.replace(/^v/, ''), 10) : NaN);
  switch (p.architecture) {
    case 'amd64': {
      const n = level(p.variant);
      if (n > 1) for (let v = n - 1; v >= 1; v--) out.push(with_('amd64', v === 1 ? undefined : `v${v}`));
      out.push(with_('386'));
      break;
    }
    case 'arm': {
      const n = level(p.variant);
      if (n > 5) for (let v = n - 1; v >= 5; v--) out.push(with_('arm', `v${v}`));
      break;
    }
    case 'arm64': {
      if (p.variant) out.push(with_('arm64'));
      for (let v = 8; v >= 5; v--) out.push(with_('arm', `v${v}`));
      break;
    }
  }
  return out;
}

/** True when two platforms are the same after normalization (os.version ignored). */
export function platformEquals(a: Platform, b: Platform): boolean {
  const x = normalizePlatform(a);
  const y = normalizePlatform(b);
  return x.os === y.os && x.architecture === y.architecture && (x.variant ?? '') === (y.variant ?? '');
}

/**
 * Picks the manifest for `platform` from an index, Docker's way: platforms
 * are normalized (so "linux/arm64" matches "linux/arm64/v8" and "linux/arm"
 * matches "linux/arm/v7"), an exact match wins, then the compatible
 * platforms in `compatiblePlatforms` order; among equals the first entry in
 * the index wins. Entries without a platform (attestations) never match.
 * Throws NotFoundError naming `ref` (when given), the platform, and what the
 * index offers.
 */
export function chooseManifest(index: { manifests: readonly Descriptor[] }, platform: Platform, ref?: Reference | string): Descriptor {
  const candidates = index.manifests.filter((d) => d.platform);
  for (const want of compatiblePlatforms(platform)) {
    const hit = candidates.find((d) => platformEquals(d.platform!, want));
    if (hit) return hit;
  }
  const name = typeof ref === 'string' ? ref : ref ? formatReference(ref) : 'index';
  const offered = [...new Set(candidates.map((d) => formatPlatform(normalizePlatform(d.platform!))))].join(', ') || 'none';
  throw new NotFoundError(`${name}: no manifest for platform ${formatPlatform(normalizePlatform(platform))} (index offers: ${offered})`, {
    platform: formatPlatform(platform),
  });
}
