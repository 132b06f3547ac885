import { existsSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { makeImage, makeIndex } from './oci-image.js';
import { bcryptHash, findRegistry, startRegistry } from './registry.js';

describe('test images', () => {
  it('are deterministic OCI or Docker images with a config naming the platform', () => {
    const a = makeImage({ platform: 'linux/arm64/v8' });
    const b = makeImage({ platform: 'linux/arm64/v8' });
    expect(a.manifest.descriptor.digest).toBe(b.manifest.descriptor.digest);
    expect(a.manifest.descriptor.platform).toEqual({ os: 'linux', architecture: 'arm64', variant: 'v8' });
    const config = JSON.parse(a.config.data.toString()) as { architecture: string; rootfs: { diff_ids: string[] } };
    expect(config.architecture).toBe('arm64');
    expect(config.rootfs.diff_ids).toHaveLength(1);
    expect(gunzipSync(a.layers[0]!.data).subarray(0, 9).toString()).toBe('hello.txt');
    const list = makeIndex([a, makeImage({ format: 'docker' })], 'docker');
    expect(JSON.parse(list.index.data.toString())).toMatchObject({ mediaType: 'application/vnd.docker.distribution.manifest.list.v2+json', manifests: [{ platform: { architecture: 'arm64' } }, { platform: { architecture: 'amd64' } }] });
  });
});

describe.skipIf(!findRegistry())('startRegistry (needs docker-registry; skipped when it is not installed)', () => {
  it('makes bcrypt htpasswd hashes', () => {
    expect(bcryptHash('pw')).toMatch(/^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/);
  });

  it('starts on a free loopback port and cleans up on stop', async () => {
    const registry = await startRegistry();
    expect(registry.url).toBe(`http://${registry.host}`);
    expect(registry.host).toBe(`127.0.0.1:${registry.port}`);
    const res = await fetch(`${registry.url}/v2/`);
    expect(res.status).toBe(200);
    await registry.stop();
    await registry.stop(); // idempotent
    expect(existsSync(registry.dir)).toBe(false);
    await expect(fetch(`${registry.url}/v2/`)).rejects.toThrow();
  });

  it('requires basic auth with htpasswd', async () => {
    await using registry = await startRegistry({ htpasswd: { user: 'u', password: 'p@ss word' } });
    expect((await fetch(`${registry.url}/v2/`)).status).toBe(401);
    const auth = (p: string) => ({ headers: { authorization: `Basic ${Buffer.from(`u:${p}`).toString('base64')}` } });
    expect((await fetch(`${registry.url}/v2/`, auth('wrong'))).status).toBe(401);
    expect((await fetch(`${registry.url}/v2/`, auth('p@ss word'))).status).toBe(200);
  });
});
