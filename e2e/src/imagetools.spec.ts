import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findRegistry, pushBusyboxImage, runKiln, startRegistry, type PushedBusybox, type TestRegistry } from '@kiln/testkit';

const has = (bin: string) => spawnSync('sh', ['-c', `command -v ${bin}`]).status === 0;

describe.skipIf(!findRegistry() || !existsSync('/bin/busybox'))('kiln imagetools inspect and create against a registry', () => {
  let registry: TestRegistry;
  let work: string;
  let amd: PushedBusybox;
  let arm: PushedBusybox;

  beforeAll(async () => {
    registry = await startRegistry();
    work = mkdtempSync(join(tmpdir(), 'kiln-imagetools-'));
    // Two single-platform images in one repository, sharing their layer.
    amd = await pushBusyboxImage(registry, work, 'kiln/src', 'amd64', { architecture: 'amd64' });
    arm = await pushBusyboxImage(registry, work, 'kiln/src', 'arm64', { architecture: 'arm64' });
  }, 60_000);
  afterAll(async () => {
    await registry?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('create: an index over two manifests in another repository, blobs mounted (none uploaded); inspect shows it', async () => {
    const target = `${registry.host}/kiln/multi:1`;
    const dry = await runKiln(['imagetools', 'create', '--dry-run', '-t', target, amd.ref, arm.ref]);
    expect(dry.code, dry.stderr).toBe(0);
    const planned = JSON.parse(dry.stdout) as { mediaType: string; manifests: { digest: string; platform: { architecture: string } }[] };
    expect(planned.mediaType).toBe('application/vnd.oci.image.index.v1+json');
    expect(planned.manifests.map((m) => [m.digest, m.platform.architecture])).toEqual([
      [amd.manifestDigest, 'amd64'],
      [arm.manifestDigest, 'arm64'],
    ]);
    // Nothing was pushed by the dry run.
    expect((await fetch(`${registry.url}/v2/kiln/multi/tags/list`)).status).toBe(404);

    const res = await runKiln(['imagetools', 'create', '-t', target, amd.ref, arm.ref]);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).toMatch(/^mounted sha256:[0-9a-f]{64} from kiln\/src$/m);
    expect(res.stderr).not.toMatch(/^uploaded /m);
    expect(res.stderr).toMatch(/^pushed 127\.0\.0\.1:\d+\/kiln\/multi:1@sha256:[0-9a-f]{64}$/m);

    const pretty = await runKiln(['imagetools', 'inspect', target]);
    expect(pretty.code, pretty.stderr).toBe(0);
    expect(pretty.stdout).toMatch(/^Name:\s+127\.0\.0\.1:\d+\/kiln\/multi:1\nMediaType:\s+application\/vnd\.oci\.image\.index\.v1\+json\nDigest:\s+sha256:/);
    expect(pretty.stdout).toMatch(/Platform:\s+linux\/amd64/);
    expect(pretty.stdout).toMatch(/Platform:\s+linux\/arm64/);

    const raw = await runKiln(['imagetools', 'inspect', '--raw', target]);
    expect(JSON.parse(raw.stdout)).toEqual(planned);

    const image = await runKiln(['imagetools', 'inspect', target, '--format', '{{json .Image}}']);
    expect(image.code, image.stderr).toBe(0);
    const byPlatform = JSON.parse(image.stdout) as Record<string, { architecture: string; config: { Cmd: string[] } }>;
    expect(Object.keys(byPlatform).sort()).toEqual(['linux/amd64', 'linux/arm64']);
    expect(byPlatform['linux/arm64']!.config.Cmd).toEqual(['/bin/sh']);

    const manifest = await runKiln(['imagetools', 'inspect', amd.ref, '--format', '{{json .Manifest}}']);
    expect(JSON.parse(manifest.stdout)).toMatchObject({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: amd.manifestDigest });
    const name = await runKiln(['imagetools', 'inspect', amd.ref, '--format', '{{.Name}} {{.Manifest.digest}}']);
    expect(name.stdout).toBe(`${amd.ref} ${amd.manifestDigest}\n`);
  });

  it.skipIf(!has('skopeo'))('skopeo reads the created index and copies an image out of it', async () => {
    const target = `${registry.host}/kiln/multi:2`;
    expect((await runKiln(['imagetools', 'create', '-t', target, amd.ref])).code).toBe(0);
    // --append adds the arm64 manifest to the index the tag has.
    const appended = await runKiln(['imagetools', 'create', '--append', '-t', target, arm.ref]);
    expect(appended.code, appended.stderr).toBe(0);
    const raw = spawnSync('skopeo', ['inspect', '--tls-verify=false', '--raw', `docker://${target}`], { encoding: 'utf8' });
    expect(raw.status, raw.stderr).toBe(0);
    const index = JSON.parse(raw.stdout) as { manifests: { digest: string }[] };
    expect(index.manifests.map((m) => m.digest)).toEqual([amd.manifestDigest, arm.manifestDigest]);
    const one = spawnSync('skopeo', ['inspect', '--tls-verify=false', '--override-arch', 'arm64', `docker://${target}`], { encoding: 'utf8' });
    expect(one.status, one.stderr).toBe(0);
    expect((JSON.parse(one.stdout) as { Digest: string; Architecture: string }).Architecture).toBe('arm64');
  });

  it('bad input: a bad template and a missing image are clear errors', async () => {
    const tpl = await runKiln(['imagetools', 'inspect', amd.ref, '--format', '{{ toYaml .Image }}']);
    expect(tpl.code).toBe(2);
    expect(tpl.stderr).toContain('function "toYaml" not defined');
    const missing = await runKiln(['imagetools', 'inspect', `${registry.host}/kiln/nope:1`]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/ERROR: .*kiln\/nope:1.*not found/);
  });
});
