import { describe, expect, it } from 'vitest';
import type { Descriptor } from './media.js';
import { chooseManifest, compatiblePlatforms, formatPlatform, normalizePlatform, parsePlatform } from './platform.js';
import { parseReference } from './reference.js';

const entry = (platform: string, n: number): Descriptor => ({
  mediaType: 'application/vnd.oci.image.manifest.v1+json',
  digest: `sha256:${String(n).repeat(64).slice(0, 64)}`,
  size: 100 + n,
  platform: parsePlatform(platform),
});

describe('platforms', () => {
  it.each([
    ['linux/x86_64', 'linux/amd64'],
    ['linux/aarch64', 'linux/arm64'],
    ['linux/arm64/v8', 'linux/arm64'],
    ['linux/arm64/8', 'linux/arm64'],
    ['linux/arm', 'linux/arm/v7'],
    ['linux/arm/7', 'linux/arm/v7'],
    ['linux/armhf', 'linux/arm/v7'],
    ['linux/armel', 'linux/arm/v6'],
    ['Linux/AMD64/v1', 'linux/amd64'],
    ['linux/i386', 'linux/386'],
  ])('normalizes %s to %s', (input, want) => {
    expect(formatPlatform(normalizePlatform(parsePlatform(input)))).toBe(want);
  });

  it('rejects malformed platforms naming the field', () => {
    expect(() => parsePlatform('linux', '--platform')).toThrow(/invalid platform "linux"/);
    expect(() => parsePlatform('linux/amd64/v2/x')).toThrow(/want os\/arch/);
  });

  it('orders compatible platforms best first', () => {
    expect(compatiblePlatforms(parsePlatform('linux/arm/v7')).map(formatPlatform)).toEqual(['linux/arm/v7', 'linux/arm/v6', 'linux/arm/v5']);
    expect(compatiblePlatforms(parsePlatform('linux/amd64/v3')).map(formatPlatform)).toEqual(['linux/amd64/v3', 'linux/amd64/v2', 'linux/amd64', 'linux/386']);
    expect(compatiblePlatforms(parsePlatform('linux/arm64')).map(formatPlatform)[0]).toBe('linux/arm64');
  });
});

describe('chooseManifest', () => {
  const index = {
    manifests: [
      entry('linux/amd64', 1),
      entry('linux/arm64/v8', 2),
      entry('linux/arm/v7', 3),
      entry('linux/arm/v6', 4),
      { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${'9'.repeat(64)}`, size: 9, platform: { os: 'unknown', architecture: 'unknown' } },
    ],
  };

  it('matches arm64 with and without the default v8 variant', () => {
    expect(chooseManifest(index, parsePlatform('linux/arm64')).size).toBe(102);
    expect(chooseManifest(index, parsePlatform('linux/arm64/v8')).size).toBe(102);
    expect(chooseManifest({ manifests: [entry('linux/arm64', 5)] }, parsePlatform('linux/arm64/v8')).size).toBe(105);
  });

  it('matches arm without a variant as v7 and falls back to lower variants', () => {
    expect(chooseManifest(index, parsePlatform('linux/arm')).size).toBe(103);
    expect(chooseManifest(index, parsePlatform('linux/arm/v6')).size).toBe(104);
    expect(chooseManifest({ manifests: [entry('linux/arm', 6)] }, parsePlatform('linux/arm/v7')).size).toBe(106);
    expect(chooseManifest({ manifests: [entry('linux/arm/v5', 7), entry('linux/arm/v6', 8)] }, parsePlatform('linux/arm/v7')).size).toBe(108);
  });

  it('prefers the exact platform over a compatible one and the first among equals', () => {
    const m = { manifests: [entry('linux/arm/v7', 1), entry('linux/arm64', 2), entry('linux/arm64/v8', 3)] };
    expect(chooseManifest(m, parsePlatform('linux/arm64')).size).toBe(102);
    expect(chooseManifest({ manifests: [entry('linux/arm/v7', 1)] }, parsePlatform('linux/arm64')).size).toBe(101);
  });

  it('throws not_found naming the reference, the platform and what the index offers', () => {
    const ref = parseReference('127.0.0.1:5000/a/b:tag');
    expect(() => chooseManifest(index, parsePlatform('linux/s390x'), ref)).toThrow(
      '127.0.0.1:5000/a/b:tag: no manifest for platform linux/s390x (index offers: linux/amd64, linux/arm64, linux/arm/v7, linux/arm/v6, unknown/unknown)',
    );
    try {
      chooseManifest(index, parsePlatform('windows/amd64'));
    } catch (err) {
      expect((err as { code: string }).code).toBe('not_found');
    }
  });
});
