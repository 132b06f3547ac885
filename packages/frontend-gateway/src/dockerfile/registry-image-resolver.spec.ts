import { convertDockerfile } from '@kiln/dockerfile';
import { marshal, parseDefinition } from '@kiln/llb';
import { createRegistryClient, parseReference, staticCredentials } from '@kiln/registry';
import { findRegistry, makeImage, makeIndex, startRegistry, type TestRegistry } from '@kiln/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRegistryImageResolver } from './registry-image-resolver.js';

async function* once(b: Uint8Array) {
  yield b;
}

describe.skipIf(!findRegistry())('registry image resolver against a real registry', () => {
  let registry: TestRegistry;
  const client = createRegistryClient({});
  const amd = makeImage({ platform: 'linux/amd64', cmd: ['/amd'] });
  const arm = makeImage({ platform: 'linux/arm64', cmd: ['/arm'] });
  const multi = makeIndex([amd, arm]);

  beforeAll(async () => {
    registry = await startRegistry();
    const ref = parseReference(`${registry.host}/base:1`);
    for (const img of [amd, arm]) {
      for (const b of img.blobs) await client.pushBlob(ref, b.descriptor, () => once(b.data));
      await client.pushManifest({ ...ref, tag: undefined }, img.manifest.descriptor, img.manifest.data);
    }
    await client.pushManifest(ref, multi.index.descriptor, multi.index.data);
  });
  afterAll(() => registry?.stop());

  it('resolves the platform config and pins the index digest; caches repeated lookups', async () => {
    let requests = 0;
    const counting = createRegistryClient({ fetch: (input, init) => (requests++, fetch(input, init)) });
    const resolver = createRegistryImageResolver(counting);
    const ref = `${registry.host}/base:1`;
    const meta = await resolver.resolve(ref, { os: 'linux', architecture: 'arm64' });
    expect(meta.digest).toBe(multi.index.descriptor.digest);
    expect(meta.config).toMatchObject({ architecture: 'arm64', config: { Cmd: ['/arm'] } });
    const before = requests;
    await resolver.resolve(ref, { os: 'linux', architecture: 'arm64' });
    expect(requests).toBe(before);

    const res = await convertDockerfile(`FROM ${ref}\nENV X=1\n`, { imageResolver: resolver, platform: { os: 'linux', architecture: 'amd64' } });
    expect(res.imageConfig.config.Cmd).toEqual(['/amd']);
    const def = parseDefinition(marshal(res.state));
    const src = [...def.ops.values()].find((o) => o.op.op.case === 'source')!.op.op;
    expect(src.case === 'source' && src.value.identifier).toBe(`docker-image://${ref}@${multi.index.descriptor.digest}`);
  });

  it('sees a moved tag at once when asked fresh (--pull), and caches the new answer', async () => {
    const resolver = createRegistryImageResolver(client);
    const ref = parseReference(`${registry.host}/moving:1`);
    const pushTo = async (img: typeof amd) => {
      for (const b of img.blobs) await client.pushBlob(ref, b.descriptor, () => once(b.data));
      await client.pushManifest(ref, img.manifest.descriptor, img.manifest.data);
    };
    const amd64 = { os: 'linux', architecture: 'amd64' };
    await pushTo(amd);
    expect((await resolver.resolve(`${registry.host}/moving:1`, amd64)).digest).toBe(amd.manifest.descriptor.digest);
    const moved = makeImage({ platform: 'linux/amd64', cmd: ['/moved'] });
    await pushTo(moved);
    // Within the TTL the cached digest is served; fresh asks the registry and replaces it.
    expect((await resolver.resolve(`${registry.host}/moving:1`, amd64)).digest).toBe(amd.manifest.descriptor.digest);
    expect((await resolver.fresh().resolve(`${registry.host}/moving:1`, amd64)).digest).toBe(moved.manifest.descriptor.digest);
    expect((await resolver.withCredentials(staticCredentials({}), { fresh: true }).resolve(`${registry.host}/moving:1`, amd64)).digest).toBe(moved.manifest.descriptor.digest);
    expect((await resolver.resolve(`${registry.host}/moving:1`, amd64)).digest).toBe(moved.manifest.descriptor.digest);
  });

  it('fails with the reference named for a missing image, and does not cache the failure', async () => {
    const resolver = createRegistryImageResolver(client);
    await expect(convertDockerfile(`FROM ${registry.host}/nope:1\n`, { imageResolver: resolver })).rejects.toMatchObject({
      code: 'source',
      details: { line: 1 },
      message: expect.stringContaining(`${registry.host}/nope:1`),
    });
  });

  it('keys cached metadata by identity: what a build with credentials resolved is not served to one without', async () => {
    const secured = await startRegistry({ htpasswd: { user: 'kiln', password: 'pw' } });
    try {
      const creds = staticCredentials({ [secured.host]: { username: 'kiln', password: 'pw' } });
      const ref = parseReference(`${secured.host}/private:1`);
      const pusher = createRegistryClient({ credentials: creds });
      for (const b of amd.blobs) await pusher.pushBlob(ref, b.descriptor, () => once(b.data));
      await pusher.pushManifest(ref, amd.manifest.descriptor, amd.manifest.data);

      const resolver = createRegistryImageResolver(createRegistryClient({}));
      const name = `${secured.host}/private:1`;
      const amd64 = { os: 'linux', architecture: 'amd64' };
      const meta = await resolver.withCredentials(creds).resolve(name, amd64);
      expect(meta.digest).toBe(amd.manifest.descriptor.digest);
      await expect(resolver.resolve(name, amd64)).rejects.toMatchObject({ code: 'unauthenticated', message: expect.stringContaining(name) });
      await expect(resolver.withCredentials(staticCredentials({})).resolve(name, amd64)).rejects.toMatchObject({ code: 'unauthenticated' });
    } finally {
      await secured.stop();
    }
  });
});
