import { createHash } from 'node:crypto';
import { frontend, llb, session } from '@kiln/api';
import { createInMemoryTransport, createKilnClient, silentLogger, type KilnError } from '@kiln/common';
import { localAttrs, parseDefinition } from '@kiln/llb';
import { describe, expect, it } from 'vitest';
import { dockerfileFrontend } from '../dockerfile/dockerfile-frontend.js';
import { createFrontendServiceImpl } from './frontend-service.js';

/** The frontend tier over the router transport, its session relay faked with in-memory files. */
function setup(files: Record<string, string>, delayMs = 0) {
  const reads: string[] = [];
  let inFlight = 0;
  const stats = { maxInFlight: 0 };
  const transport = createInMemoryTransport((r) => {
    r.service(session.SessionService, {
      async readFile(req) {
        reads.push(`${req.dirName}:${req.path}`);
        stats.maxInFlight = Math.max(stats.maxInFlight, ++inFlight);
        await new Promise((resolve) => setTimeout(resolve, delayMs));
        inFlight--;
        const data = files[`${req.dirName}:${req.path}`];
        return data === undefined ? { found: false } : { found: true, data: new TextEncoder().encode(data) };
      },
    });
  });
  const fe = createInMemoryTransport((r) =>
    r.service(
      frontend.FrontendService,
      createFrontendServiceImpl({ frontends: [dockerfileFrontend], sessions: createKilnClient(session.SessionService, transport), logger: silentLogger() }),
    ),
  );
  return { client: createKilnClient(frontend.FrontendService, fe), reads, stats };
}

function contextSource(def: ReturnType<typeof parseDefinition>) {
  const op = [...def.ops.values()].find((o) => o.op.op.case === 'source')!.op.op;
  if (op.case !== 'source') throw new Error('no source');
  return localAttrs(op.value.attrs);
}

describe('FrontendService with dockerfile.v0', () => {
  it('reads the Dockerfile and .dockerignore through the session and returns LLB + image config', async () => {
    const { client, reads } = setup({ 'dockerfile:Dockerfile': 'FROM scratch\nARG V=1\nCOPY a /a\nLABEL v=$V\n', 'context:.dockerignore': '*.log\n# c\n!keep.log\n' });
    const res = await client.solve({ buildId: 'b', sessionId: 's', frontend: 'dockerfile.v0', attrs: { 'build-arg:V': '2' } });
    const def = parseDefinition(res.definition!);
    // Context paths are also follow paths: the client sends a symlink's target, as BuildKit's does.
    expect(contextSource(def)).toEqual({ includePatterns: ['a'], excludePatterns: ['*.log', '!keep.log'], followPaths: ['a'] });
    expect(res.definition!.sources[0]?.filename).toBe('Dockerfile');
    expect(JSON.parse(new TextDecoder().decode(res.imageConfig)).config.Labels).toEqual({ v: '2' });
    expect(reads).toEqual(['dockerfile:Dockerfile', 'dockerfile:Dockerfile.dockerignore', 'context:.dockerignore']);
  });

  it('takes label:K attrs over the LABELs, force-network-mode for RUN, and returns the Dockerfile default SOURCE_DATE_EPOCH', async () => {
    const { client } = setup({ 'dockerfile:Dockerfile': 'ARG SOURCE_DATE_EPOCH=1700000001\nFROM scratch\nLABEL foo=bar\nRUN true\n' });
    const res = await client.solve({ buildId: 'b', sessionId: 's', frontend: 'dockerfile.v0', attrs: { 'label:bar': 'baz', 'force-network-mode': 'none' } });
    expect(JSON.parse(new TextDecoder().decode(res.imageConfig)).config.Labels).toEqual({ foo: 'bar', bar: 'baz' });
    const exec = [...parseDefinition(res.definition!).ops.values()].find((o) => o.op.op.case === 'exec')!.op.op;
    expect(exec.case === 'exec' && exec.value.network).toBe(llb.NetMode.NONE);
    expect(res.metadata).toEqual({ 'source-date-epoch': '1700000001' });
    const overridden = await client.solve({ buildId: 'b', sessionId: 's', frontend: 'dockerfile.v0', attrs: { 'build-arg:SOURCE_DATE_EPOCH': '1700000002' } });
    expect(overridden.metadata).toEqual({ 'source-date-epoch': '1700000002' });
    await expect(client.solve({ buildId: 'b', sessionId: 's', frontend: 'dockerfile.v0', attrs: { 'force-network-mode': 'bridge' } })).rejects.toMatchObject({ code: 'invalid_argument', details: { field: 'force-network-mode' } });
  });

  it('fails on an invalid SOURCE_DATE_EPOCH default with BuildKit\'s message', async () => {
    const { client } = setup({ 'dockerfile:Dockerfile': 'ARG SOURCE_DATE_EPOCH=not-a-timestamp\nFROM scratch\n' });
    await expect(client.solve({ buildId: 'b', sessionId: 's', frontend: 'dockerfile.v0', attrs: {} })).rejects.toMatchObject({ message: expect.stringContaining('invalid SOURCE_DATE_EPOCH: not-a-timestamp') });
  });

  it('asks the client for the Dockerfile and both ignore files at once (each read is a round trip)', async () => {
    const { client, stats } = setup({ 'dockerfile:Dockerfile': 'FROM scratch\nCOPY a /a\n', 'context:.dockerignore': 'b\n' }, 20);
    const res = await client.solve({ buildId: 'b', sessionId: 's', frontend: 'dockerfile.v0', attrs: {} });
    expect(contextSource(parseDefinition(res.definition!)).excludePatterns).toEqual(['b']);
    expect(stats.maxInFlight).toBe(3);
  });

  it('prefers <Dockerfile>.dockerignore next to the Dockerfile', async () => {
    const { client } = setup({ 'dockerfile:app.Dockerfile': 'FROM scratch\nCOPY . /\n', 'dockerfile:app.Dockerfile.dockerignore': 'secret\n', 'context:.dockerignore': 'other\n' });
    const res = await client.solve({ buildId: 'b', sessionId: 's', frontend: 'dockerfile.v0', attrs: { filename: 'app.Dockerfile' } });
    expect(contextSource(parseDefinition(res.definition!)).excludePatterns).toEqual(['secret']);
  });

  it('keeps the file and line of a Dockerfile error across the wire', async () => {
    const { client } = setup({ 'dockerfile:Dockerfile': 'FROM scratch\n\nCOPY --bogus=1 a /a\n' });
    const err = (await client.solve({ buildId: 'b', sessionId: 's', frontend: 'dockerfile.v0', attrs: {} }).catch((e: unknown) => e)) as KilnError;
    expect(err.code).toBe('source');
    expect(err.details).toMatchObject({ file: 'Dockerfile', line: 3 });
  });

  it('returns build-check warnings with their source lines, and honours platform and named contexts', async () => {
    const { client } = setup({ 'dockerfile:Dockerfile': 'from scratch AS Base\nMAINTAINER me\nCOPY --from=extra /x /x\n' });
    const res = await client.solve({ buildId: 'b', sessionId: 's', frontend: 'dockerfile.v0', attrs: { platform: 'linux/arm64,linux/amd64', 'context:extra': 'local:extra' } });
    const warnings = res.warnings.map((w) => ({ short: new TextDecoder().decode(w.short), line: w.ranges[0]?.startLine, file: w.info?.filename }));
    expect(warnings).toEqual(
      expect.arrayContaining([
        { short: "FromAsCasing: 'AS' and 'from' keywords' casing do not match (Dockerfile:1)", line: 1, file: 'Dockerfile' },
        { short: "StageNameCasing: Stage name 'Base' should be lowercase (Dockerfile:1)", line: 1, file: 'Dockerfile' },
        { short: 'MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label (Dockerfile:2)', line: 2, file: 'Dockerfile' },
      ]),
    );
    expect(res.warnings[0]!.url).toMatch(/^https:\/\/docs\.docker\.com\/go\/dockerfile\/rule\//);
    expect(JSON.parse(new TextDecoder().decode(res.imageConfig)).architecture).toBe('arm64');
    const ids = [...parseDefinition(res.definition!).ops.values()].flatMap((o) => (o.op.op.case === 'source' ? [o.op.op.value.identifier] : []));
    expect(ids).toEqual(['local://extra']);
  });

  it('reads an oci-layout context over the session: config applied, platform manifest pinned, bad tags named', async () => {
    const files: Record<string, string> = { 'dockerfile:Dockerfile': 'FROM base\nRUN env\n' };
    const blob = (doc: unknown, mediaType: string) => {
      const text = JSON.stringify(doc);
      const digest = `sha256:${createHash('sha256').update(text).digest('hex')}`;
      files[`oci-1:blobs/sha256/${digest.slice(7)}`] = text;
      return { mediaType, digest, size: Buffer.byteLength(text) };
    };
    const config = blob({ architecture: 'amd64', os: 'linux', config: { Env: ['FROM_BASE=1'], WorkingDir: '/w' }, rootfs: { type: 'layers', diff_ids: [] } }, 'application/vnd.oci.image.config.v1+json');
    const manifest = blob({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config, layers: [] }, 'application/vnd.oci.image.manifest.v1+json');
    files['oci-1:index.json'] = JSON.stringify({ schemaVersion: 2, manifests: [{ ...manifest, annotations: { 'org.opencontainers.image.ref.name': 'v1' } }] });
    const { client, reads } = setup(files);
    const res = await client.solve({ buildId: 'b', sessionId: 's', frontend: 'dockerfile.v0', attrs: { platform: 'linux/amd64', 'context:base': 'oci-layout://oci-1:v1' } });
    const ops = [...parseDefinition(res.definition!).ops.values()].map((o) => o.op.op);
    expect(ops.flatMap((o) => (o.case === 'source' ? [o.value.identifier] : []))).toEqual([`oci-layout://oci-1@${manifest.digest}`]);
    const exec = ops.find((o) => o.case === 'exec');
    expect(exec?.case === 'exec' && exec.value.meta).toMatchObject({ env: ['FROM_BASE=1'], cwd: '/w' });
    expect(reads).toEqual(expect.arrayContaining(['oci-1:index.json', `oci-1:blobs/sha256/${manifest.digest.slice(7)}`, `oci-1:blobs/sha256/${config.digest.slice(7)}`]));
    const err = (await client
      .solve({ buildId: 'b', sessionId: 's', frontend: 'dockerfile.v0', attrs: { 'context:base': 'oci-layout://oci-1:v2' } })
      .catch((e: unknown) => e)) as KilnError;
    expect(err.message).toContain('failed to resolve build context "base" (oci-layout://oci-1:v2): OCI layout: tag "v2" not found in index.json (tags: v1)');
    expect(err.details).toMatchObject({ file: 'Dockerfile', line: 1 });
  });

  it('solves each platform of a list: target args per platform, shared BUILDPLATFORM stages give identical ops', async () => {
    const dockerfile = [
      'FROM --platform=$BUILDPLATFORM scratch AS build',
      'COPY src /src',
      'RUN --mount=type=bind,source=x,target=/x ["/x"]',
      'FROM scratch',
      'ARG TARGETARCH TARGETPLATFORM BUILDPLATFORM',
      'COPY --from=build /src /out-$TARGETARCH',
      'LABEL target=$TARGETPLATFORM build=$BUILDPLATFORM',
      'MAINTAINER me',
      '',
    ].join('\n');
    const { client } = setup({ 'dockerfile:Dockerfile': dockerfile });
    const res = await client.solve({ buildId: 'b', sessionId: 's', frontend: 'dockerfile.v0', attrs: { platform: 'linux/amd64,linux/arm64,linux/amd64', 'build-platform': 'linux/riscv64' } });
    expect(res.platformResults.map((r) => r.platform)).toEqual(['linux/amd64', 'linux/arm64']);
    const configs = res.platformResults.map((r) => JSON.parse(new TextDecoder().decode(r.imageConfig)));
    expect(configs.map((c) => [c.architecture, c.config.Labels])).toEqual([
      ['amd64', { target: 'linux/amd64', build: 'linux/riscv64' }],
      ['arm64', { target: 'linux/arm64', build: 'linux/riscv64' }],
    ]);
    const defs = res.platformResults.map((r) => parseDefinition(r.definition!));
    const execs = defs.map((d) => [...d.ops.entries()].filter(([, o]) => o.op.op.case === 'exec'));
    // The build stage runs on the build platform for both targets: same op, same digest.
    expect(execs[0]!.map(([digest]) => digest)).toEqual(execs[1]!.map(([digest]) => digest));
    expect(execs[0]![0]![1].op.platform).toMatchObject({ os: 'linux', architecture: 'riscv64' });
    expect(res.definition).toEqual(res.platformResults[0]!.definition);
    expect(res.warnings.filter((w) => new TextDecoder().decode(w.short).startsWith('MaintainerDeprecated'))).toHaveLength(1);
    await expect(client.solve({ buildId: 'b', sessionId: 's', frontend: 'dockerfile.v0', attrs: { platform: 'linux/amd64,linux amd64' } })).rejects.toMatchObject({ code: 'invalid_argument', details: { field: 'platform' } });
  });

  it('fails the build on warnings with # check=error=true, naming the line', async () => {
    const { client } = setup({ 'dockerfile:Dockerfile': '# check=error=true\nFROM scratch\nCMD run\n' });
    await expect(client.solve({ buildId: 'b', sessionId: 's', frontend: 'dockerfile.v0', attrs: {} })).rejects.toMatchObject({
      code: 'source',
      details: { line: 3 },
      message: expect.stringContaining('JSONArgsRecommended'),
    });
  });

  it('names a missing Dockerfile and an unknown frontend', async () => {
    const { client } = setup({});
    await expect(client.solve({ buildId: 'b', sessionId: 's', frontend: 'dockerfile.v0', attrs: { filename: 'Nope' } })).rejects.toMatchObject({
      code: 'not_found',
      message: expect.stringContaining('Nope'),
    });
    await expect(client.solve({ buildId: 'b', sessionId: 's', frontend: 'gateway.v0', attrs: {} })).rejects.toMatchObject({ code: 'invalid_argument' });
  });
});
