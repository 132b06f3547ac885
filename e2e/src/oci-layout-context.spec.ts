import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runKiln, startTopology, type KilnTopology, e2eWorker } from '@kiln/testkit';

// A base with no registry: Debian's static busybox copied in from the context.
const BUSYBOX = '/bin/busybox';

// Split: the frontend and worker tiers reach the client's layout only through the solver's session relay.
const topologies = (['all-in-one', 'split'] as const).map((topology) => ({ topology, start: () => startTopology(topology) }));

describe.each(topologies)(`--build-context NAME=oci-layout://DIR:TAG [topology=$topology, worker=${e2eWorker()}]`, (topology) => {
  let daemon: KilnTopology;
  let work: string;
  let baseCtx: string;
  let appCtx: string;
  let layout: string;

  /** Builds the base image into the OCI layout directory `layout`, tagged v1, with `data` in /data/data.txt. */
  async function buildBase(data: string): Promise<void> {
    writeFileSync(join(baseCtx, 'data.txt'), data);
    const res = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '-t', 'kiln-e2e/base:v1', '-o', `type=oci,dest=${layout},tar=false`, baseCtx], { env: daemon.env });
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
  }

  const buildApp = (ref: string, out: string) =>
    runKiln(['build', '--addr', daemon.addr, '--progress=plain', '--build-context', `base=oci-layout://${ref}`, '-o', `type=local,dest=${out}`, appCtx], { env: daemon.env });

  beforeAll(async () => {
    daemon = await topology.start();
    work = mkdtempSync(join(tmpdir(), 'kiln-e2e-layout-ctx-'));
    baseCtx = join(work, 'base');
    appCtx = join(work, 'app');
    layout = join(work, 'layout');
    mkdirSync(baseCtx);
    mkdirSync(appCtx);
    copyFileSync(BUSYBOX, join(baseCtx, 'busybox'));
    writeFileSync(
      join(baseCtx, 'Dockerfile'),
      ['FROM scratch', 'COPY --chmod=0755 busybox /bin/busybox', 'RUN ["/bin/busybox", "--install", "-s", "/bin"]', 'ENV FROM_BASE=layout-env', 'WORKDIR /srv', 'COPY data.txt /data/data.txt', ''].join('\n'),
    );
    writeFileSync(
      join(appCtx, 'Dockerfile'),
      [
        'FROM base AS run',
        'RUN cat /data/data.txt > /copied.txt && echo "env=$FROM_BASE pwd=$(pwd)" > /env.txt',
        'FROM scratch',
        'COPY --from=run /copied.txt /env.txt /',
        'COPY --from=base /data/data.txt /direct.txt',
        '',
      ].join('\n'),
    );
  }, 90_000);

  afterAll(async () => {
    await daemon?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('builds FROM the layout image with its config, caches it, and reruns when the tag moves', async () => {
    await buildBase('first\n');
    const out1 = join(work, 'out1');
    const res = await buildApp(`${layout}:v1`, out1);
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
    expect(res.stderr).toMatch(/\[context base\] oci-layout:\/\/oci-layout-[0-9a-f]{16}:v1@sha256:[0-9a-f]{64}/);
    expect(readFileSync(join(out1, 'copied.txt'), 'utf8')).toBe('first\n');
    expect(readFileSync(join(out1, 'direct.txt'), 'utf8')).toBe('first\n');
    expect(readFileSync(join(out1, 'env.txt'), 'utf8')).toBe('env=layout-env pwd=/srv\n');

    // Unchanged layout: the RUN on it is cached.
    const again = await buildApp(`${layout}:v1`, join(work, 'out2'));
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/\[run 1\/2\] RUN cat[^\n]*\n#\d+ CACHED/);

    // The tag now names another image: the step runs again on it.
    await buildBase('second\n');
    const out3 = join(work, 'out3');
    const moved = await buildApp(`${layout}:v1`, out3);
    expect(moved.code, moved.stderr).toBe(0);
    expect(moved.stderr).not.toMatch(/\[run 1\/2\] RUN cat[^\n]*\n#\d+ CACHED/);
    expect(readFileSync(join(out3, 'copied.txt'), 'utf8')).toBe('second\n');
  });

  it('fails with exit 1 naming the context and path: unknown tag, missing layout, blob not matching its digest', async () => {
    const res = await buildApp(`${layout}:nope`, join(work, 'bad'));
    expect(res.code).toBe(1);
    expect(res.stderr).toContain(`ERROR: build context "base" (oci-layout://${layout}): tag "nope" not found in index.json (tags: v1)`);
    const missing = await buildApp(join(work, 'missing'), join(work, 'bad'));
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain(`build context "base" (oci-layout://${join(work, 'missing')}): directory not found`);

    // A blob the daemon reads over the session (the image config) no longer matches its digest.
    const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
    const manifest = JSON.parse(readFileSync(join(layout, 'blobs', 'sha256', index.manifests[0]!.digest.slice(7)), 'utf8')) as { config: { digest: string } };
    writeFileSync(join(layout, 'blobs', 'sha256', manifest.config.digest.slice(7)), '{"tampered":true}');
    const tampered = await buildApp(`${layout}:v1`, join(work, 'bad'));
    expect(tampered.code).toBe(1);
    expect(tampered.stderr).toContain(`build context "base" (oci-layout://${layout}:v1@sha256:`);
    expect(tampered.stderr).toMatch(new RegExp(`ERROR: .*build context "base".*blob ${manifest.config.digest} does not match its digest`));
  });
});
