import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { NamedContext } from './build-options.js';
import { resolveLayoutContexts, withLayoutPaths } from './oci-layout-contexts.js';

const root = mkdtempSync(join(tmpdir(), 'kiln-cli-layout-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A layout whose index tags one manifest blob `tag`; returns its dir and the manifest digest. */
function layout(name: string, tag: string) {
  const dir = join(root, name);
  mkdirSync(join(dir, 'blobs', 'sha256'), { recursive: true });
  const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: {}, layers: [] }));
  const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  writeFileSync(join(dir, 'blobs', 'sha256', digest.slice(7)), bytes);
  writeFileSync(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest, size: bytes.length, annotations: { 'org.opencontainers.image.ref.name': tag } }] }));
  return { dir, digest };
}

const ctx = (path: string, more: { tag?: string; digest?: string } = {}): NamedContext => ({ name: 'base', kind: 'oci-layout', path, store: 'oci-layout-x', ...more });

describe('resolveLayoutContexts', () => {
  it('pins the digest of the tag ("latest" by default), leaving other contexts alone', () => {
    const { dir, digest } = layout('ok', 'latest');
    const other: NamedContext = { name: 'img', kind: 'ref', value: 'docker-image://alpine' };
    expect(resolveLayoutContexts([ctx(dir), other])).toEqual([{ ...ctx(dir), digest }, other]);
    expect(resolveLayoutContexts([ctx(dir, { digest })])[0]).toMatchObject({ digest });
  });

  it('names the context and path for a missing dir, a missing index.json and an unknown tag', () => {
    const { dir } = layout('tagged', 'v1');
    expect(() => resolveLayoutContexts([ctx(join(root, 'nope'))])).toThrow(`build context "base" (oci-layout://${join(root, 'nope')}): directory not found`);
    mkdirSync(join(root, 'empty'));
    expect(() => resolveLayoutContexts([ctx(join(root, 'empty'))])).toThrow(`build context "base" (oci-layout://${join(root, 'empty')}): index.json not found`);
    expect(() => resolveLayoutContexts([ctx(dir, { tag: 'v2' })])).toThrow(`build context "base" (oci-layout://${dir}): tag "v2" not found in index.json (tags: v1)`);
  });

  it('refuses a manifest that does not match its digest, or that resolves outside the layout', () => {
    const { dir, digest } = layout('tampered', 'latest');
    writeFileSync(join(dir, 'blobs', 'sha256', digest.slice(7)), '{"changed":true}');
    expect(() => resolveLayoutContexts([ctx(dir)])).toThrow(`build context "base" (oci-layout://${dir}): blob ${digest} does not match its digest`);
    const outside = layout('escape', 'latest');
    const blob = join(outside.dir, 'blobs', 'sha256', outside.digest.slice(7));
    rmSync(blob);
    writeFileSync(join(root, 'elsewhere'), 'x');
    symlinkSync(join(root, 'elsewhere'), blob);
    expect(() => resolveLayoutContexts([ctx(outside.dir)])).toThrow(/resolves outside the layout directory/);
  });

  it('shows the client path where a daemon error names the session store', () => {
    const msg = 'failed to resolve build context "base" (oci-layout://oci-layout-x:v1@sha256:abc): OCI layout: blob sha256:abc does not match its digest';
    expect(withLayoutPaths(msg, [ctx('/home/me/layout')])).toBe(
      'failed to resolve build context "base" (oci-layout:///home/me/layout:v1@sha256:abc): OCI layout: blob sha256:abc does not match its digest',
    );
  });
});
