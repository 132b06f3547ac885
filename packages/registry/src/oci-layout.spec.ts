import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { findLayoutManifest, layoutBlobPath, parseLayoutIndex, parseLayoutRef, resolveLayoutImage, type LayoutReader } from './oci-layout.js';

const digestOf = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** An in-memory layout: blobs by digest plus an index.json. */
function layout() {
  const blobs = new Map<string, Uint8Array>();
  let index: Uint8Array | undefined;
  const put = (doc: unknown, mediaType: string) => {
    const bytes = Buffer.from(JSON.stringify(doc));
    const digest = digestOf(bytes);
    blobs.set(digest, bytes);
    return { mediaType, digest, size: bytes.byteLength };
  };
  const reader: LayoutReader = {
    readIndex: async () => index,
    readBlob: async (d) => blobs.get(d),
  };
  return { blobs, put, reader, setIndex: (doc: unknown) => (index = Buffer.from(JSON.stringify(doc))) };
}

function image(l: ReturnType<typeof layout>, arch: string) {
  const config = l.put({ architecture: arch, os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }, 'application/vnd.oci.image.config.v1+json');
  return l.put({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config, layers: [] }, 'application/vnd.oci.image.manifest.v1+json');
}

const amd64 = { os: 'linux', architecture: 'amd64' };

describe('oci layout references', () => {
  it('splits path, tag and digest', () => {
    const d = `sha256:${'a'.repeat(64)}`;
    expect(parseLayoutRef('/tmp/lay')).toEqual({ path: '/tmp/lay' });
    expect(parseLayoutRef('/tmp/lay:v1')).toEqual({ path: '/tmp/lay', tag: 'v1' });
    expect(parseLayoutRef(`/tmp/lay@${d}`)).toEqual({ path: '/tmp/lay', digest: d });
    expect(parseLayoutRef(`/tmp/a:b/lay:v1@${d}`)).toEqual({ path: '/tmp/a:b/lay', tag: 'v1', digest: d });
    expect(() => parseLayoutRef('/tmp/lay@sha256:abc')).toThrow(/not a sha256 digest/);
    expect(() => parseLayoutRef(':v1')).toThrow(/no layout path/);
  });

  it('keeps blob paths inside the layout', () => {
    expect(layoutBlobPath(`sha256:${'b'.repeat(64)}`)).toBe(`blobs/sha256/${'b'.repeat(64)}`);
    expect(() => layoutBlobPath('sha256:../../etc/passwd')).toThrow(/invalid blob digest/);
  });
});

describe('resolveLayoutImage', () => {
  it('finds a tag by its ref.name annotation, "latest" by default', async () => {
    const l = layout();
    const a = image(l, 'amd64');
    const b = image(l, 'arm64');
    l.setIndex({ schemaVersion: 2, manifests: [
      { ...a, annotations: { 'org.opencontainers.image.ref.name': 'latest' } },
      { ...b, annotations: { 'org.opencontainers.image.ref.name': 'v2' } },
    ] });
    expect((await resolveLayoutImage(l.reader, {}, amd64, 'ctx')).descriptor.digest).toBe(a.digest);
    expect((await resolveLayoutImage(l.reader, { tag: 'v2' }, amd64, 'ctx')).descriptor.digest).toBe(b.digest);
    expect((await resolveLayoutImage(l.reader, { digest: b.digest }, amd64, 'ctx')).descriptor.digest).toBe(b.digest);
    await expect(resolveLayoutImage(l.reader, { tag: 'nope' }, amd64, 'build context "base" (/x)')).rejects.toThrow(
      'build context "base" (/x): tag "nope" not found in index.json (tags: latest, v2)',
    );
  });

  it('takes the only entry of an untagged layout, but not for an explicit tag', async () => {
    const l = layout();
    const a = image(l, 'amd64');
    l.setIndex({ schemaVersion: 2, manifests: [a] });
    expect((await resolveLayoutImage(l.reader, {}, amd64, 'ctx')).descriptor.digest).toBe(a.digest);
    await expect(resolveLayoutImage(l.reader, { tag: 'v1' }, amd64, 'ctx')).rejects.toThrow(/tag "v1" not found/);
  });

  it('picks the platform manifest from a nested index', async () => {
    const l = layout();
    const a = image(l, 'amd64');
    const b = image(l, 'arm64');
    const idx = l.put({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [
      { ...a, platform: amd64 },
      { ...b, platform: { os: 'linux', architecture: 'arm64' } },
    ] }, 'application/vnd.oci.image.index.v1+json');
    l.setIndex({ schemaVersion: 2, manifests: [{ ...idx, annotations: { 'org.opencontainers.image.ref.name': 'multi' } }] });
    const got = await resolveLayoutImage(l.reader, { tag: 'multi' }, { os: 'linux', architecture: 'arm64' }, 'ctx');
    expect(got.root.digest).toBe(idx.digest);
    expect(got.descriptor.digest).toBe(b.digest);
    expect(got.manifest.config.mediaType).toBe('application/vnd.oci.image.config.v1+json');
    await expect(resolveLayoutImage(l.reader, { tag: 'multi' }, { os: 'linux', architecture: 's390x' }, 'ctx')).rejects.toThrow(/no manifest for platform linux\/s390x/);
  });

  it('refuses a blob whose bytes do not match its digest, and a missing index.json', async () => {
    const l = layout();
    const a = image(l, 'amd64');
    l.setIndex({ schemaVersion: 2, manifests: [a] });
    l.blobs.set(a.digest, Buffer.from('{"tampered":true}'));
    await expect(resolveLayoutImage(l.reader, {}, amd64, 'ctx')).rejects.toThrow(`ctx: blob ${a.digest} does not match its digest`);
    await expect(resolveLayoutImage(layout().reader, {}, amd64, 'ctx')).rejects.toThrow('ctx: index.json not found');
    expect(() => parseLayoutIndex(Buffer.from('{}'), 'ctx')).toThrow(/no valid "manifests"/);
    expect(findLayoutManifest({ schemaVersion: 2, manifests: [] }, { digest: a.digest }, 'ctx').digest).toBe(a.digest);
  });
});
