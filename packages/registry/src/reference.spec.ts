import { describe, expect, it } from 'vitest';
import { formatReference, parseReference } from './reference.js';

describe('parseReference', () => {
  it.each([
    ['busybox', 'docker.io/library/busybox:latest'],
    ['library/busybox:1.36', 'docker.io/library/busybox:1.36'],
    ['127.0.0.1:5000/kiln/base', '127.0.0.1:5000/kiln/base:latest'],
    ['localhost/x:y', 'localhost/x:y'],
    ['index.docker.io/me/app@sha256:' + 'a'.repeat(64), 'docker.io/me/app@sha256:' + 'a'.repeat(64)],
    ['ghcr.io/o/r:v1@sha256:' + 'b'.repeat(64), 'ghcr.io/o/r:v1@sha256:' + 'b'.repeat(64)],
  ])('%s -> %s', (input, want) => {
    expect(formatReference(parseReference(input))).toBe(want);
  });

  it.each(['', 'repo/UPPER', 'a//b', 'x:bad tag', 'x@sha256:short', 'x:-lead'])('rejects %j naming it', (input) => {
    expect(() => parseReference(input, 'FROM')).toThrow(/invalid reference/);
  });
});
