import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findRegistry, pushBusyboxImage, runKiln, startKilnd, startRegistry, type Kilnd, type PushedBusybox, type TestRegistry, e2eWorker } from '@kiln/testkit';

const has = (bin: string) => spawnSync('sh', ['-c', `command -v ${bin}`]).status === 0;
const canRun = process.getuid?.() === 0 && !!findRegistry() && existsSync('/bin/busybox') && has('runc');

describe.skipIf(!canRun)(`--provenance: SLSA provenance attached to the pushed image index [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let registry: TestRegistry;
  let daemon: Kilnd;
  let work: string;
  let ctx: string;
  let base: PushedBusybox;

  beforeAll(async () => {
    registry = await startRegistry();
    work = mkdtempSync(join(tmpdir(), 'kiln-provenance-'));
    base = await pushBusyboxImage(registry, work, 'kiln/busybox', '1');
    daemon = await startKilnd();
    ctx = join(work, 'ctx');
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'Dockerfile'), `FROM ${base.ref}\nARG GREETING=hi\nRUN echo $GREETING > /greeting.txt\n`);
  }, 60_000);
  afterAll(async () => {
    await daemon?.stop();
    await registry?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('mode=max: an attestation manifest as BuildKit makes it, readable with imagetools --format {{json .Provenance}}', async () => {
    const ref = `${registry.host}/kiln/prov:1`;
    const meta = join(work, 'meta.json');
    const build = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '--push', '-t', ref, '--provenance', 'mode=max', '--build-arg', 'GREETING=hello', '--metadata-file', meta, ctx]);
    expect(build.code, `${build.stderr}\n${daemon.logs().slice(-3000)}`).toBe(0);

    const raw = JSON.parse((await runKiln(['imagetools', 'inspect', '--raw', ref])).stdout) as { mediaType: string; manifests: { digest: string; platform: { os: string; architecture: string }; annotations?: Record<string, string> }[] };
    expect(raw.mediaType).toBe('application/vnd.oci.image.index.v1+json');
    expect(raw.manifests).toHaveLength(2);
    const [image, att] = raw.manifests as [(typeof raw.manifests)[0], (typeof raw.manifests)[0]];
    expect(image.platform.os).toBe('linux');
    expect(att.platform).toEqual({ os: 'unknown', architecture: 'unknown' });
    expect(att.annotations).toEqual({ 'vnd.docker.reference.digest': image.digest, 'vnd.docker.reference.type': 'attestation-manifest' });

    const prov = await runKiln(['imagetools', 'inspect', ref, '--format', '{{json .Provenance}}']);
    expect(prov.code, prov.stderr).toBe(0);
    const slsa = (JSON.parse(prov.stdout) as { SLSA: Record<string, any> }).SLSA;
    expect(slsa.buildType).toBe('https://mobyproject.org/buildkit@v1');
    expect(slsa.invocation.parameters.frontend).toBe('dockerfile.v0');
    expect(slsa.invocation.parameters.args['build-arg:GREETING']).toBe('hello');
    expect(slsa.materials).toContainEqual({ uri: expect.stringMatching(/^pkg:docker\/127\.0\.0\.1:\d+\/kiln\/busybox@1/), digest: { sha256: base.manifestDigest.slice('sha256:'.length) } });
    expect(slsa.metadata.buildInvocationID).toMatch(/^[0-9a-z]{25}$/);
    const kinds = (slsa.buildConfig.llbDefinition as { op: { kind: string } }[]).map((o) => o.op.kind);
    expect(kinds).toEqual(expect.arrayContaining(['source', 'exec']));

    const md = JSON.parse(readFileSync(meta, 'utf8')) as Record<string, any>;
    expect(md['buildx.build.provenance']).toMatchObject({ buildType: 'https://mobyproject.org/buildkit@v1' });
    expect(md['containerimage.digest']).toBe((await (await fetch(`${registry.url}/v2/kiln/prov/manifests/1`, { method: 'HEAD', headers: { accept: 'application/vnd.oci.image.index.v1+json' } })).headers.get('docker-content-digest')));

    if (has('skopeo')) {
      // Tools still find the image in the index: the attestation entry is skipped for the platform.
      const sk = spawnSync('skopeo', ['inspect', '--tls-verify=false', `docker://${ref}`], { encoding: 'utf8' });
      expect(sk.status, sk.stderr).toBe(0);
      const info = JSON.parse(sk.stdout) as { Digest: string; Os: string; Layers: string[] };
      expect(info.Digest).toBe(md['containerimage.digest']);
      expect(info.Os).toBe('linux');
      expect(info.Layers).toHaveLength(2);
    }
  });

  it('mode=min leaves out the build steps; --sbom is refused by name (not built yet)', async () => {
    const ref = `${registry.host}/kiln/prov:min`;
    const build = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '--push', '-t', ref, '--attest', 'type=provenance,mode=min', ctx]);
    expect(build.code, build.stderr).toBe(0);
    const slsa = (JSON.parse((await runKiln(['imagetools', 'inspect', ref, '--format', '{{json .Provenance}}'])).stdout) as { SLSA: Record<string, unknown> }).SLSA;
    expect(slsa.buildConfig).toBeUndefined();
    expect(slsa.materials).toHaveLength(1);
    const sbom = await runKiln(['build', '--addr', daemon.addr, '--sbom=true', ctx]);
    expect(sbom.code).toBe(2);
    expect(sbom.stderr).toContain('--sbom: SBOM attestations are not supported yet');
  });
});
