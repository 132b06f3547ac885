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

  it('mode=min leaves out the build steps; --sbom with a scanner image is refused by name', async () => {
    const ref = `${registry.host}/kiln/prov:min`;
    const build = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '--push', '-t', ref, '--attest', 'type=provenance,mode=min', ctx]);
    expect(build.code, build.stderr).toBe(0);
    const slsa = (JSON.parse((await runKiln(['imagetools', 'inspect', ref, '--format', '{{json .Provenance}}'])).stdout) as { SLSA: Record<string, unknown> }).SLSA;
    expect(slsa.buildConfig).toBeUndefined();
    expect(slsa.materials).toHaveLength(1);
    const sbom = await runKiln(['build', '--addr', daemon.addr, '--sbom=generator=docker/buildkit-syft-scanner', ctx]);
    expect(sbom.code).toBe(2);
    expect(sbom.stderr).toContain('Kiln runs its built-in scanner');
  });

  it('--sbom: an SPDX document of the dpkg and npm packages, in the attestation manifest next to the provenance', async () => {
    const sctx = join(work, 'sbom-ctx');
    mkdirSync(sctx);
    writeFileSync(
      join(sctx, 'status'),
      'Package: libfoo1\nStatus: install ok installed\nArchitecture: amd64\nSource: foo\nVersion: 1.2-3+deb12u1\nMaintainer: Foo Team <foo@example.com>\n\nPackage: oldpkg\nStatus: deinstall ok config-files\nVersion: 0.1\n',
    );
    writeFileSync(join(sctx, 'os-release'), 'ID=debian\nVERSION_ID="12"\n');
    writeFileSync(
      join(sctx, 'Dockerfile'),
      `FROM ${base.ref}\nCOPY status /var/lib/dpkg/status\nCOPY os-release /etc/os-release\n` +
        `RUN mkdir -p /srv/app/node_modules/left-pad /srv/app/node_modules/@acme/util && echo '{"name":"left-pad","version":"1.3.0","license":"WTFPL"}' > /srv/app/node_modules/left-pad/package.json && echo '{"name":"@acme/util","version":"2.0.1","license":"MIT"}' > /srv/app/node_modules/@acme/util/package.json\n`,
    );
    const ref = `${registry.host}/kiln/sbom:1`;
    const build = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '--push', '-t', ref, '--sbom=true', '--provenance=true', sctx]);
    expect(build.code, `${build.stderr}\n${daemon.logs().slice(-3000)}`).toBe(0);
    expect(build.stderr).toContain('generating sbom using the kiln-sbom scanner');

    const raw = JSON.parse((await runKiln(['imagetools', 'inspect', '--raw', ref])).stdout) as { manifests: { digest: string; annotations?: Record<string, string> }[] };
    expect(raw.manifests).toHaveLength(2);
    const [image, att] = raw.manifests as [(typeof raw.manifests)[0], (typeof raw.manifests)[0]];
    expect(att.annotations).toEqual({ 'vnd.docker.reference.digest': image.digest, 'vnd.docker.reference.type': 'attestation-manifest' });
    // The attestation manifest holds both statements, each an in-toto layer with its predicate type.
    const attManifest = (await (await fetch(`${registry.url}/v2/kiln/sbom/manifests/${att.digest}`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } })).json()) as { layers: { mediaType: string; digest: string; annotations: Record<string, string> }[] };
    expect(attManifest.layers.map((l) => [l.mediaType, l.annotations['in-toto.io/predicate-type']])).toEqual([
      ['application/vnd.in-toto+json', 'https://slsa.dev/provenance/v0.2'],
      ['application/vnd.in-toto+json', 'https://spdx.dev/Document'],
    ]);
    const statement = (await (await fetch(`${registry.url}/v2/kiln/sbom/blobs/${attManifest.layers[1]!.digest}`)).json()) as Record<string, any>;
    expect(statement).toMatchObject({ _type: 'https://in-toto.io/Statement/v0.1', predicateType: 'https://spdx.dev/Document', subject: [{ digest: { sha256: image.digest.slice('sha256:'.length) } }] });

    const shown = await runKiln(['imagetools', 'inspect', ref, '--format', '{{json .SBOM}}']);
    expect(shown.code, shown.stderr).toBe(0);
    const spdx = (JSON.parse(shown.stdout) as { SPDX: Record<string, any> }).SPDX;
    expect(spdx).toEqual(statement.predicate);
    expect(spdx.spdxVersion).toBe('SPDX-2.3');
    const pkgs = (spdx.packages as { name: string; versionInfo: string; licenseDeclared: string; externalRefs: { referenceLocator: string }[] }[]).map((p) => [p.name, p.versionInfo, p.licenseDeclared, p.externalRefs[0]!.referenceLocator]);
    expect(pkgs).toEqual([
      ['libfoo1', '1.2-3+deb12u1', 'NOASSERTION', 'pkg:deb/debian/libfoo1@1.2-3%2Bdeb12u1?arch=amd64&distro=debian-12&upstream=foo'],
      ['@acme/util', '2.0.1', 'MIT', 'pkg:npm/%40acme/util@2.0.1'],
      ['left-pad', '1.3.0', 'WTFPL', 'pkg:npm/left-pad@1.3.0'],
    ]);
    expect(spdx.relationships).toHaveLength(3);

    if (has('skopeo')) {
      // skopeo reads the same index and finds the same attestation manifest (and the image for the platform).
      const sk = spawnSync('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`], { encoding: 'utf8' });
      expect(sk.status, sk.stderr).toBe(0);
      expect((JSON.parse(sk.stdout) as { manifests: { digest: string }[] }).manifests.map((m) => m.digest)).toEqual([image.digest, att.digest]);
    }
  });
  it('default: a push gets mode=min provenance as with buildx (imagetools, skopeo --raw); --provenance=false, --attest disabled=true and BUILDX_NO_DEFAULT_ATTESTATIONS=1 push a bare manifest', async () => {
    const ref = `${registry.host}/kiln/prov:default`;
    const build = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '--push', '-t', ref, ctx], { env: { BUILDX_NO_DEFAULT_ATTESTATIONS: '' } });
    expect(build.code, `${build.stderr}\n${daemon.logs().slice(-3000)}`).toBe(0);
    const raw = JSON.parse((await runKiln(['imagetools', 'inspect', '--raw', ref])).stdout) as { mediaType: string; manifests: { digest: string; annotations?: Record<string, string> }[] };
    expect(raw.mediaType).toBe('application/vnd.oci.image.index.v1+json');
    expect(raw.manifests[1]?.annotations).toEqual({ 'vnd.docker.reference.digest': raw.manifests[0]!.digest, 'vnd.docker.reference.type': 'attestation-manifest' });
    const prov = await runKiln(['imagetools', 'inspect', ref, '--format', '{{json .Provenance}}']);
    expect(prov.code, prov.stderr).toBe(0);
    const slsa = (JSON.parse(prov.stdout) as { SLSA: Record<string, unknown> }).SLSA;
    expect(slsa.buildType).toBe('https://mobyproject.org/buildkit@v1');
    expect(slsa.buildConfig).toBeUndefined(); // mode=min
    if (has('skopeo')) {
      const sk = spawnSync('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`], { encoding: 'utf8' });
      expect(sk.status, sk.stderr).toBe(0);
      expect((JSON.parse(sk.stdout) as { manifests: { digest: string }[] }).manifests.map((m) => m.digest)).toEqual(raw.manifests.map((m) => m.digest));
    }

    const optOuts: [string, string[], NodeJS.ProcessEnv][] = [
      ['false', ['--provenance=false'], {}],
      ['attest-disabled', ['--attest', 'type=provenance,disabled=true'], {}],
      ['env', [], { BUILDX_NO_DEFAULT_ATTESTATIONS: '1' }],
    ];
    for (const [tag, flags, env] of optOuts) {
      const bare = `${registry.host}/kiln/prov:${tag}`;
      const b = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '--push', '-t', bare, ...flags, ctx], { env });
      expect(b.code, b.stderr).toBe(0);
      const m = JSON.parse((await runKiln(['imagetools', 'inspect', '--raw', bare])).stdout) as { mediaType: string; manifests?: unknown[] };
      expect(m.mediaType, tag).not.toBe('application/vnd.oci.image.index.v1+json');
      expect(m.manifests, tag).toBeUndefined();
      const none = await runKiln(['imagetools', 'inspect', bare, '--format', '{{json .Provenance}}']);
      expect(none.stdout.trim(), tag).not.toContain('SLSA');
      if (has('skopeo')) {
        const sk = spawnSync('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${bare}`], { encoding: 'utf8' });
        expect(sk.status, sk.stderr).toBe(0);
        expect((JSON.parse(sk.stdout) as { layers?: unknown[] }).layers, tag).toBeDefined();
      }
    }
  });
});
