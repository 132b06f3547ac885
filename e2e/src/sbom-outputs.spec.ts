import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runKiln, startKilnd, type Kilnd, e2eWorker } from '@kiln/testkit';

/**
 * `--sbom` (and `--provenance`) on outputs that are not a registry: the OCI
 * layout gets the attestation manifest in its index, as BuildKit's oci
 * exporter does (checked with skopeo and umoci); local and tar outputs get
 * `sbom.spdx.json` / `provenance.json` statement files beside the result.
 */
describe(`--sbom on oci, local and tar outputs [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let root: string;
  let ctx: string;
  let daemon: Kilnd;

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'kiln-sbom-out-'));
    ctx = join(root, 'ctx');
    mkdirSync(ctx);
    // No base image: a dpkg status file and an npm package are what the scanner finds.
    writeFileSync(join(ctx, 'status'), 'Package: libfoo1\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.2-3\n\n');
    writeFileSync(join(ctx, 'package.json'), '{"name":"left-pad","version":"1.3.0","license":"WTFPL"}\n');
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM scratch\nCOPY status /var/lib/dpkg/status\nCOPY package.json /srv/node_modules/left-pad/package.json\n');
    daemon = await startKilnd();
  }, 60_000);
  afterAll(async () => {
    await daemon?.stop();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  const build = (args: string[]) => runKiln(['build', '--addr', daemon.addr, '--progress=plain', '--sbom=true', ...args, ctx]);
  const packageNames = (doc: any) => (doc.packages as { name: string }[]).map((p) => p.name).sort();

  it('type=oci: the attestation manifest (SPDX + provenance) is in the layout index; skopeo and umoci read the image', async () => {
    const layout = join(root, 'layout');
    const r = await build(['--provenance=true', '-o', `type=oci,dest=${layout},tar=false,name=kiln/sbom:1`]);
    expect(r.code, `${r.stderr}\n${daemon.logs().slice(-2000)}`).toBe(0);
    expect(r.stderr).toContain('generating sbom using the kiln-sbom scanner');
    const blob = (d: string) => JSON.parse(readFileSync(join(layout, 'blobs', ...d.split(':')), 'utf8'));
    const top = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8'));
    const index = blob(top.manifests[0].digest);
    expect(index.mediaType).toBe('application/vnd.oci.image.index.v1+json');
    const [image, att] = index.manifests;
    expect(att.annotations).toEqual({ 'vnd.docker.reference.type': 'attestation-manifest', 'vnd.docker.reference.digest': image.digest });
    expect(att.platform).toEqual({ os: 'unknown', architecture: 'unknown' });
    const layers = blob(att.digest).layers as { digest: string; annotations: Record<string, string> }[];
    expect(layers.map((l) => l.annotations['in-toto.io/predicate-type']).sort()).toEqual(['https://slsa.dev/provenance/v0.2', 'https://spdx.dev/Document']);
    const spdx = blob(layers.find((l) => l.annotations['in-toto.io/predicate-type'] === 'https://spdx.dev/Document')!.digest);
    expect(spdx.subject[0].digest.sha256).toBe(image.digest.slice('sha256:'.length));
    expect(packageNames(spdx.predicate)).toEqual(['left-pad', 'libfoo1']);
    // Real OCI tools read the layout: skopeo lists the image by its tag, umoci unpacks it.
    const inspected = JSON.parse(execFileSync('skopeo', ['inspect', '--raw', `oci:${layout}:1`], { encoding: 'utf8' }));
    expect(inspected.manifests.map((m: any) => m.digest)).toContain(att.digest);
    // umoci takes one image, as from any BuildKit layout with attestations: skopeo picks this
    // platform's image out of the index (the attestation manifest is platform unknown/unknown).
    execFileSync('skopeo', ['copy', '-q', `oci:${layout}:1`, `oci:${join(root, 'single')}:img`], { stdio: 'pipe' });
    try {
      execFileSync('umoci', ['unpack', '--rootless', '--image', `${join(root, 'single')}:img`, join(root, 'bundle')], { stdio: 'pipe' });
    } catch (err) {
      throw new Error(`umoci: ${String((err as { stderr?: Buffer }).stderr)}`);
    }
    expect(readFileSync(join(root, 'bundle', 'rootfs', 'var', 'lib', 'dpkg', 'status'), 'utf8')).toContain('libfoo1');
  }, 90_000);

  it('type=local: sbom.spdx.json beside the files, an in-toto statement whose subjects are the files', async () => {
    const out = join(root, 'local');
    const r = await build(['-o', `type=local,dest=${out}`]);
    expect(r.code, r.stderr).toBe(0);
    expect(readdirSync(out).sort()).toEqual(['sbom.spdx.json', 'srv', 'var']);
    const st = JSON.parse(readFileSync(join(out, 'sbom.spdx.json'), 'utf8'));
    expect(st.predicateType).toBe('https://spdx.dev/Document');
    expect(packageNames(st.predicate)).toEqual(['left-pad', 'libfoo1']);
    const status = readFileSync(join(out, 'var', 'lib', 'dpkg', 'status'));
    expect(st.subject).toContainEqual({ name: 'var/lib/dpkg/status', digest: { sha256: createHash('sha256').update(status).digest('hex') } });
  }, 60_000);

  it('type=tar with --provenance: sbom.spdx.json and provenance.json in the tar; without --sbom none', async () => {
    const tar = join(root, 'out.tar');
    const r = await build(['--provenance=true', '-o', `type=tar,dest=${tar}`]);
    expect(r.code, r.stderr).toBe(0);
    const names = execFileSync('tar', ['-tf', tar], { encoding: 'utf8' }).split('\n');
    expect(names).toContain('sbom.spdx.json');
    expect(names).toContain('provenance.json');
    const prov = JSON.parse(execFileSync('tar', ['-xOf', tar, 'provenance.json'], { encoding: 'utf8' }));
    expect(prov.predicateType).toBe('https://slsa.dev/provenance/v0.2');
    const plain = join(root, 'plain');
    const p = await runKiln(['build', '--addr', daemon.addr, '-o', `type=local,dest=${plain}`, ctx]);
    expect(p.code, p.stderr).toBe(0);
    expect(readdirSync(plain).sort()).toEqual(['srv', 'var']);
  }, 60_000);
});
