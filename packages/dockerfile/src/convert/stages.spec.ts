import { marshal, parseDefinition, type ParsedDefinition } from '@kiln/llb';
import { describe, expect, it } from 'vitest';
import { convertDockerfile, type ConvertOptions } from './convert.js';
import type { ImageMetaResolver } from './image-meta.js';

async function convert(text: string, opts: ConvertOptions = {}) {
  const res = await convertDockerfile(text, opts);
  return { ...res, def: parseDefinition(marshal(res.state)) };
}

function sources(def: ParsedDefinition) {
  return [...def.ops.values()].flatMap((o) => (o.op.op.case === 'source' ? [{ id: o.op.op.value.identifier, attrs: o.op.op.value.attrs, platform: o.op.platform }] : []));
}

function copies(def: ParsedDefinition) {
  return [...def.ops.values()].flatMap((o) => (o.op.op.case === 'file' ? o.op.op.value.actions.flatMap((a) => (a.action.case === 'copy' ? [a.action.value] : [])) : []));
}

function execs(def: ParsedDefinition) {
  return [...def.ops.values()].flatMap((o) => (o.op.op.case === 'exec' ? [o.op.op.value] : []));
}

const amd64 = { os: 'linux', architecture: 'amd64' };
const arm64 = { os: 'linux', architecture: 'arm64' };

describe('ADD and COPY', () => {
  it('adds local files with archive unpacking, and URLs and git repos as sources', async () => {
    const { def } = await convert(
      [
        'FROM scratch',
        'ADD app.tar.gz /app/',
        'ADD --unpack=false raw.tar /raw/',
        `ADD --checksum=sha256:${'0123abcd'.repeat(8)} --chmod=u+x,g-w https://example.com/dl/tool.sh /usr/bin/tool`,
        'ADD --keep-git-dir https://github.com/moby/buildkit.git#v0.13.0:docs /docs',
        'ADD git@github.com:org/repo.git /repo',
      ].join('\n'),
    );
    const src = sources(def);
    expect(src.map((s) => s.id).sort()).toEqual([
      'git://github.com/moby/buildkit.git#v0.13.0:docs',
      'git://github.com/org/repo.git',
      'https://example.com/dl/tool.sh',
      'local://context',
    ]);
    expect(src.find((s) => s.id.startsWith('https'))!.attrs).toEqual({ 'http.checksum': `sha256:${'0123abcd'.repeat(8)}`, 'http.filename': 'tool.sh' });
    expect(src.find((s) => s.id.includes('buildkit'))!.attrs).toEqual({ 'git.keepgitdir': 'true', 'git.fullurl': 'https://github.com/moby/buildkit.git' });
    expect(src.find((s) => s.id.includes('org/repo'))!.attrs).toEqual({ 'git.fullurl': 'git@github.com:org/repo.git' });
    const c = copies(def);
    expect(c.find((x) => x.src === '/app.tar.gz')).toMatchObject({ dest: '/app/', attemptUnpackDockerCompatibility: true });
    expect(c.find((x) => x.src === '/raw.tar')).toMatchObject({ attemptUnpackDockerCompatibility: false });
    expect(c.find((x) => x.src === '/tool.sh')).toMatchObject({ dest: '/usr/bin/tool', mode: -1, modeStr: 'u+x,g-w', attemptUnpackDockerCompatibility: false });
  });

  it('rejects --checksum on local sources, several sources or a malformed digest, and --keep-git-dir off git', async () => {
    const sum = `sha256:${'ab'.repeat(32)}`;
    await expect(convertDockerfile(`FROM scratch\nADD --checksum=${sum} a /a\n`)).rejects.toThrow(/non-HTTP/);
    await expect(convertDockerfile(`FROM scratch\nADD --checksum=${sum} https://e.org/a https://e.org/b /d/\n`)).rejects.toThrow(/checksum can't be specified for multiple sources/);
    await expect(convertDockerfile('FROM scratch\nADD --checksum=sha256:abc https://e.org/a /a\n')).rejects.toMatchObject({ details: { line: 2 }, message: expect.stringContaining('sha256 takes 64 hex digits') });
    await expect(convertDockerfile('FROM scratch\nADD --checksum=md5:abc https://e.org/a /a\n')).rejects.toThrow(/invalid checksum digest format/);
    await expect(convertDockerfile('FROM scratch\nADD --checksum=v1.2 https://github.com/o/r.git#v1.2 /r\n')).rejects.toThrow(/invalid checksum "v1.2" for a git source: expected hex commit hash/);
    await expect(convertDockerfile('FROM scratch\nADD --keep-git-dir https://x.org/f /f\n')).rejects.toThrow(/only valid for git/);
  });

  it('copies with --parents, --exclude, --chown, octal and symbolic --chmod, --from an image', async () => {
    const { def } = await convert(
      [
        'FROM scratch',
        'COPY --parents --exclude=*.md ./src/./pkg/**/*.go /out/',
        'COPY --chown=app:staff --chmod=0640 conf/*.yaml /etc/app/',
        'COPY --from=alpine:3.19 --chmod=go-w /etc/os-release /os-release',
        'COPY --link --from=busybox /bin/busybox /bin/',
      ].join('\n'),
      { platform: arm64 },
    );
    const c = copies(def);
    expect(c[0]).toMatchObject({ src: '/src/./pkg/**/*.go', parents: true, includePatterns: [], excludePatterns: ['*.md'], allowWildcard: true, allowEmptyWildcard: true });
    expect(c[1]).toMatchObject({ src: '/conf/*.yaml', mode: 0o640, owner: { user: { user: { case: 'name', value: 'app' } }, group: { user: { case: 'name', value: 'staff' } } } });
    expect(c[2]).toMatchObject({ src: '/etc/os-release', modeStr: 'go-w', mode: -1 });
    const images = sources(def).filter((s) => s.id.startsWith('docker-image://'));
    expect(images.map((s) => s.id).sort()).toEqual(['docker-image://docker.io/library/alpine:3.19', 'docker-image://docker.io/library/busybox:latest']);
    expect(images[0]!.platform).toMatchObject({ architecture: 'arm64' });
    const ctx = sources(def).find((s) => s.id === 'local://context')!;
    expect(JSON.parse(ctx.attrs['local.includepattern']!)).toEqual(['conf/*.yaml', 'src/pkg/**/*.go']);
    // The same paths are follow paths: the client sends the targets of symlinks met on them.
    expect(JSON.parse(ctx.attrs['local.followpaths']!)).toEqual(['conf/*.yaml', 'src/pkg/**/*.go']);
  });

  it('copies into the workdir as a directory when the destination expands to nothing', async () => {
    const { def } = await convert(['FROM scratch', 'WORKDIR /var/www', 'ENV empty=""', 'COPY --link f $empty', 'COPY g ""'].join('\n'));
    expect(copies(def).map((c) => c.dest)).toEqual(['/var/www/', '/var/www/']);
  });
});

describe('COPY and ADD heredocs and history', () => {
  it('copies a heredoc from a scratch file, so --chmod (symbolic too) and --chown apply; expansion keeps quotes', async () => {
    const { def, imageConfig } = await convert('FROM scratch\nARG NAME=world\nCOPY --chmod=u+x --chown=1:2 <<EOF /bin/hello\n#!/bin/sh\necho "hello $NAME" \'$NAME\'\nEOF\n');
    const mk = [...def.ops.values()].flatMap((o) => (o.op.op.case === 'file' ? o.op.op.value.actions.flatMap((a) => (a.action.case === 'mkfile' ? [a.action.value] : [])) : []));
    expect(mk.map((m) => [m.path, m.mode, new TextDecoder().decode(m.data)])).toEqual([['/EOF', 0o644, '#!/bin/sh\necho "hello world" \'world\'\n']]);
    expect(copies(def)).toHaveLength(1);
    expect(copies(def)[0]).toMatchObject({ src: '/EOF', dest: '/bin/hello', modeStr: 'u+x', mode: -1, owner: { user: { user: { case: 'id', value: 1 } }, group: { user: { case: 'id', value: 2 } } } });
    expect(imageConfig.history.at(-1)!.created_by).toBe('COPY --chown=1:2 --chmod=u+x <<EOF /bin/hello # buildkit');
  });

  it('records --parents, --chown and --chmod in the history line, as BuildKit', async () => {
    const { imageConfig } = await convert('FROM scratch\nARG U=app\nCOPY --parents --chown=$U --chmod=0640 a/./b /d/\nADD --chmod=755 x.tar /x/\n');
    expect(imageConfig.history.slice(-2).map((h) => h.created_by)).toEqual(['COPY --parents --chown=app --chmod=0640 a/./b /d/ # buildkit', 'ADD --chmod=755 x.tar /x/ # buildkit']);
  });
});

describe('COPY --link', () => {
  const fileOps = (def: ParsedDefinition) => [...def.ops.entries()].filter(([, o]) => o.op.op.case === 'file');
  it('copies onto scratch and merges onto the stage, so the copy does not depend on the layers below', async () => {
    const a = await convert('FROM busybox\nRUN echo one\nCOPY --link app/ /app/\n', { platform: amd64 });
    const b = await convert('FROM alpine:3.19\nRUN echo two\nCOPY --link app/ /app/\n', { platform: amd64 });
    const [copyA] = fileOps(a.def);
    const [copyB] = fileOps(b.def);
    expect(copyA![0]).toBe(copyB![0]);
    expect(copyA![1].op.inputs).toHaveLength(1); // the context only: the base is scratch
    const result = a.def.ops.get(a.def.result!.digest)!;
    expect(result.op.op.case).toBe('merge');
    expect(result.op.inputs.map((i) => a.def.ops.get(i.digest as `sha256:${string}`)!.op.op.case)).toEqual(['exec', 'file']);
    expect(result.op.op.value).toEqual(expect.objectContaining({ inputs: [0n, 1n] }));
  });

  it('without --link, and onto a scratch stage, copies in place', async () => {
    const plain = await convert('FROM busybox\nCOPY app/ /app/\n');
    expect(plain.def.ops.get(plain.def.result!.digest)!.op.op.case).toBe('file');
    const scratch = await convert('FROM scratch\nADD --link app/ /app/\n');
    expect(scratch.def.ops.get(scratch.def.result!.digest)!.op.op.case).toBe('file');
  });
});

describe('ARG and platforms', () => {
  it('gives global ARGs to FROM and to stages that redeclare them, build args winning over defaults', async () => {
    const { def } = await convert(
      ['ARG BASE=busybox', 'ARG VERSION=1', 'FROM ${BASE}:${VERSION}', 'ARG VERSION', 'ARG OTHER=x', 'ARG BASE', 'RUN echo $VERSION $OTHER $BASE'].join('\n'),
      { buildArgs: { VERSION: '2' } },
    );
    expect(sources(def).map((s) => s.id)).toEqual(['docker-image://docker.io/library/busybox:2']);
    expect(execs(def)[0]!.meta?.env).toEqual(expect.arrayContaining(['VERSION=2', 'OTHER=x', 'BASE=busybox']));
  });

  it('does not leak a global ARG into a stage that does not declare it', async () => {
    const { def, warnings } = await convert('ARG SECRETLESS=1\nFROM scratch\nENV X=$SECRETLESS\nRUN true\n');
    expect(execs(def)[0]!.meta?.env).toContain('X=');
    expect(warnings.map((w) => w.rule)).toContain('UndefinedVar');
  });

  it('defines the automatic platform args, used in FROM --platform and inside stages', async () => {
    const text = [
      'FROM --platform=$BUILDPLATFORM busybox AS build',
      'ARG TARGETPLATFORM TARGETOS TARGETARCH TARGETVARIANT BUILDPLATFORM BUILDARCH TARGETSTAGE',
      'RUN echo $TARGETPLATFORM $TARGETOS/$TARGETARCH on $BUILDPLATFORM',
      'FROM scratch AS final',
      'COPY --from=build /out /out',
    ].join('\n');
    const { def, imageConfig, platform } = await convert(text, { platform: { os: 'linux', architecture: 'arm', variant: 'v7' }, buildPlatform: amd64 });
    const env = execs(def)[0]!.meta!.env;
    expect(env).toEqual(
      expect.arrayContaining(['TARGETPLATFORM=linux/arm/v7', 'TARGETOS=linux', 'TARGETARCH=arm', 'TARGETVARIANT=v7', 'BUILDPLATFORM=linux/amd64', 'BUILDARCH=amd64', 'TARGETSTAGE=final']),
    );
    const busybox = sources(def).find((s) => s.id.includes('busybox'))!;
    expect(busybox.platform).toMatchObject({ architecture: 'amd64' });
    expect(platform).toEqual({ os: 'linux', architecture: 'arm', variant: 'v7' });
    expect(imageConfig).toMatchObject({ os: 'linux', architecture: 'arm', variant: 'v7' });
  });
});

describe('multi-stage, targets and named contexts', () => {
  const text = ['FROM scratch AS base', 'COPY base.txt /', 'FROM base AS dev', 'COPY dev.txt /', 'FROM scratch AS unused', 'COPY unused.txt /', 'FROM base', 'COPY --from=1 /dev.txt /'].join('\n');

  it('converts only the stages the target needs, by name or index', async () => {
    const include = async (opts: ConvertOptions) => JSON.parse(sources((await convert(text, opts)).def).find((s) => s.id === 'local://context')!.attrs['local.includepattern']!);
    expect(await include({})).toEqual(['base.txt', 'dev.txt']);
    expect(await include({ target: 'base' })).toEqual(['base.txt']);
    expect(await include({ target: '2' })).toEqual(['unused.txt']);
    await expect(convertDockerfile(text, { target: 'dvc' })).rejects.toThrow(/did you mean dev\?/);
  });

  it('detects cycles and missing stage indexes', async () => {
    await expect(convertDockerfile('FROM scratch AS a\nCOPY --from=b /x /x\nFROM scratch AS b\nCOPY --from=a /y /y\n')).rejects.toMatchObject({ details: { line: 4 }, message: 'circular dependency detected on stage: a' });
    await expect(convertDockerfile('FROM scratch\nCOPY --from=7 /x /x\n')).rejects.toMatchObject({ details: { line: 2 }, message: expect.stringContaining('invalid stage index 7') });
  });

  it('overrides stages and images with --build-context', async () => {
    const { def } = await convert('FROM alpine AS base\nRUN true\nFROM scratch\nCOPY --from=base /a /a\nCOPY --from=assets /logo.png /\nCOPY --from=tools /bin/t /t\n', {
      namedContexts: { base: 'docker-image://registry.local:5000/base:1', assets: 'local:assets', tools: 'oci-layout://store@sha256:' + 'a'.repeat(64) },
    });
    const ids = sources(def).map((s) => s.id).sort();
    expect(ids).toEqual(['docker-image://registry.local:5000/base:1', 'local://assets', `oci-layout://store@sha256:${'a'.repeat(64)}`]);
    expect(execs(def)).toHaveLength(0); // the overridden stage's RUN is never converted
  });

  it('reads docker-image://scratch as the empty image: nothing resolved or pulled, for FROM and --from', async () => {
    const resolve = async () => {
      throw new Error('scratch must not be resolved');
    };
    const { def } = await convert('FROM busybox AS build\nCOPY <<EOF /out\nhi\nEOF\nFROM scratch\nCOPY --from=build /out /\nCOPY --from=tools / /t\n', {
      namedContexts: { busybox: 'docker-image://scratch', tools: 'docker-image://scratch' },
      imageResolver: { resolve },
    });
    expect(sources(def).filter((s) => s.id.startsWith('docker-image://'))).toEqual([]);
    expect(copies(def).map((c) => c.dest)).toEqual(expect.arrayContaining(['/out']));
  });
});

describe('base images', () => {
  const baseConfig = {
    architecture: 'amd64',
    os: 'linux',
    config: {
      Env: ['PATH=/usr/local/bin:/usr/bin:/bin', 'LANG=C.UTF-8'],
      WorkingDir: '/srv',
      User: 'app',
      Entrypoint: ['/entry'],
      Cmd: ['serve'],
      Labels: { vendor: 'x' },
      ExposedPorts: { '80/tcp': {} },
      OnBuild: ['COPY onbuild.txt /onbuild.txt', 'RUN echo triggered'],
    },
    rootfs: { type: 'layers', diff_ids: ['sha256:' + '1'.repeat(64)] },
    history: [{ created_by: 'base layer' }],
  };
  const resolver = (): ImageMetaResolver & { calls: string[] } => {
    const calls: string[] = [];
    return {
      calls,
      async resolve(ref, platform) {
        calls.push(`${ref} ${platform.architecture}`);
        if (ref.includes('missing')) throw new Error('not found');
        return { digest: 'sha256:' + 'd'.repeat(64), config: baseConfig };
      },
    };
  };

  it('starts the stage from the image config, pins the digest and runs ONBUILD triggers', async () => {
    const r = resolver();
    const { def, imageConfig } = await convert('FROM example.com/app:1\nENV MORE=1\nENTRYPOINT ["/new"]\nRUN id\n', { imageResolver: r, platform: amd64 });
    expect(r.calls).toEqual(['example.com/app:1 amd64']);
    expect(sources(def).map((s) => s.id)).toContain(`docker-image://example.com/app:1@sha256:${'d'.repeat(64)}`);
    const [trigger, run] = execs(def);
    expect(trigger!.meta).toMatchObject({ args: ['/bin/sh', '-c', 'echo triggered'], cwd: '/srv', user: 'app' });
    expect(run!.meta?.env).toEqual(['PATH=/usr/local/bin:/usr/bin:/bin', 'LANG=C.UTF-8', 'MORE=1']);
    expect(copies(def).map((c) => c.src)).toEqual(['/onbuild.txt']);
    expect(imageConfig.config).toMatchObject({ WorkingDir: '/srv', User: 'app', Entrypoint: ['/new'], Cmd: null, Labels: { vendor: 'x' }, ExposedPorts: { '80/tcp': {} }, OnBuild: null });
    expect(imageConfig.history[0]).toEqual({ created_by: 'base layer' });
    expect(imageConfig.history.at(-1)).toMatchObject({ created_by: 'RUN /bin/sh -c id # buildkit' });
  });

  it('runs the ONBUILD triggers of a stage of the same Dockerfile in the stage built FROM it, not in the stage itself', async () => {
    const { def } = await convert('FROM scratch AS base\nONBUILD COPY trigger.txt /t\nCOPY own.txt /o\nFROM base\nCOPY child.txt /c\n');
    expect(copies(def).map((c) => c.src)).toEqual(['/own.txt', '/trigger.txt', '/child.txt']);
    const onlyBase = await convert('FROM scratch AS base\nONBUILD COPY trigger.txt /t\nCOPY own.txt /o\nFROM base\n', { target: 'base' });
    expect(copies(onlyBase.def).map((c) => c.src)).toEqual(['/own.txt']);
    expect(onlyBase.imageConfig.config.OnBuild).toEqual(['COPY trigger.txt /t']);
  });

  it('keeps CMD set in the same stage when ENTRYPOINT follows', async () => {
    const { imageConfig } = await convert('FROM example.com/app:1\nCMD ["a"]\nENTRYPOINT ["/e"]\n', { imageResolver: resolver() });
    expect(imageConfig.config).toMatchObject({ Cmd: ['a'], Entrypoint: ['/e'] });
  });

  it('starts FROM an oci-layout context from its config and pins the platform manifest', async () => {
    const calls: string[] = [];
    const r: ImageMetaResolver = {
      resolve: async () => {
        throw new Error('not a registry image');
      },
      async resolveOciLayout(ref, platform) {
        calls.push(`${ref} ${platform.architecture}`);
        if (ref.includes('bad')) throw new Error('tag "bad" not found in index.json');
        return { digest: 'sha256:' + 'e'.repeat(64), config: baseConfig };
      },
    };
    const { def, imageConfig } = await convert('FROM base AS b\nRUN id\nFROM scratch\nCOPY --from=b /a /a\nCOPY --from=base /c /c\n', {
      imageResolver: r,
      platform: amd64,
      namedContexts: { base: 'oci-layout://oci-1:v1' },
    });
    expect(calls).toEqual(['oci-1:v1 amd64']);
    const layout = sources(def).filter((s) => s.id.startsWith('oci-layout://'));
    expect(layout.map((s) => s.id)).toEqual([`oci-layout://oci-1@sha256:${'e'.repeat(64)}`]);
    const [, run] = execs(def);
    expect(run!.meta).toMatchObject({ cwd: '/srv', user: 'app', env: ['PATH=/usr/local/bin:/usr/bin:/bin', 'LANG=C.UTF-8'] });
    expect(imageConfig.config.User).toBeUndefined(); // the target stage is FROM scratch
    await expect(convertDockerfile('FROM scratch\nFROM base\n', { imageResolver: r, namedContexts: { base: 'oci-layout://oci-1:bad' } })).rejects.toMatchObject({
      details: { line: 2 },
      message: expect.stringContaining('failed to resolve build context "base" (oci-layout://oci-1:bad): tag "bad" not found'),
    });
  });

  it('names the FROM line when an image cannot be resolved', async () => {
    await expect(convertDockerfile('FROM scratch\n\nFROM example.com/missing:1\n', { imageResolver: resolver() })).rejects.toMatchObject({
      details: { line: 3 },
      message: expect.stringContaining('example.com/missing:1'),
    });
  });
});

describe('image config and history', () => {
  it('matches BuildKit for the config instructions', async () => {
    const { imageConfig } = await convert(
      [
        'FROM scratch',
        'MAINTAINER jane@example.com',
        'LABEL a=1 "b c"=2',
        'ENV PATH=/opt/bin:$PATH',
        'EXPOSE 80 8000-8001/udp',
        'VOLUME ["/data", "/cache"]',
        'USER 1000:1000',
        'WORKDIR /app',
        'SHELL ["/bin/bash", "-o", "pipefail", "-c"]',
        'HEALTHCHECK --interval=30s --timeout=5s --retries=3 CMD curl -f http://localhost/',
        'STOPSIGNAL SIGQUIT',
        'ONBUILD RUN make',
        'ARG V=1',
        'RUN echo hi',
        'COPY f.txt /dst/',
        'CMD ["run"]',
      ].join('\n'),
      { platform: amd64 },
    );
    expect(imageConfig).toMatchObject({
      os: 'linux',
      architecture: 'amd64',
      author: 'jane@example.com',
      config: {
        Env: ['PATH=/opt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
        Labels: { a: '1', 'b c': '2' },
        ExposedPorts: { '80/tcp': {}, '8000/udp': {}, '8001/udp': {} },
        Volumes: { '/data': {}, '/cache': {} },
        User: '1000:1000',
        WorkingDir: '/app',
        Shell: ['/bin/bash', '-o', 'pipefail', '-c'],
        Healthcheck: { Test: ['CMD-SHELL', 'curl -f http://localhost/'], Interval: 30e9, Timeout: 5e9, Retries: 3 },
        StopSignal: 'SIGQUIT',
        OnBuild: ['RUN make'],
        Cmd: ['run'],
      },
    });
    expect(imageConfig.history.map((h) => [h.created_by, h.empty_layer ?? false])).toEqual([
      ['MAINTAINER jane@example.com', true],
      ['LABEL a=1 b c=2', true],
      ['ENV PATH=/opt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', true],
      // BuildKit: fmt.Sprintf("EXPOSE %v", ports) of the port/proto list.
      ['EXPOSE [80/tcp 8000/udp 8001/udp]', true],
      ['VOLUME [/data /cache]', true],
      ['USER 1000:1000', true],
      ['WORKDIR /app', false],
      ['SHELL [/bin/bash -o pipefail -c]', true],
      // BuildKit: fmt.Sprintf("HEALTHCHECK %q", config.Healthcheck), as `docker history` shows it.
      ['HEALTHCHECK &{["CMD-SHELL" "curl -f http://localhost/"] "30s" "5s" "0s" "0s" \'\\x03\'}', true],
      ['STOPSIGNAL SIGQUIT', true],
      // ONBUILD has no history entry (it only lands in the config).
      ['ARG V=1', true],
      ['RUN |1 V=1 /bin/bash -o pipefail -c echo hi # buildkit', false],
      ['COPY f.txt /dst/ # buildkit', false],
      ['CMD ["run"]', true],
    ]);
    expect(new Set(imageConfig.history.map((h) => h.comment))).toEqual(new Set(['buildkit.dockerfile.v0']));
  });

  it('writes HEALTHCHECK NONE and a healthcheck with every duration as BuildKit does', async () => {
    const { imageConfig } = await convert(
      [
        'FROM scratch',
        'HEALTHCHECK --interval=1m30s --timeout=500ms --start-period=2s --start-interval=100ms --retries=5 CMD ["/bin/probe", "-q"]',
        'HEALTHCHECK NONE',
      ].join('\n'),
      { platform: amd64 },
    );
    expect(imageConfig.history.map((h) => h.created_by)).toEqual([
      'HEALTHCHECK &{["CMD" "/bin/probe" "-q"] "1m30s" "500ms" "2s" "100ms" \'\\x05\'}',
      'HEALTHCHECK &{["NONE"] "0s" "0s" "0s" "0s" \'\\x00\'}',
    ]);
  });

  it('is deterministic: the same inputs give the same definition digest', async () => {
    const text = 'FROM busybox AS a\nRUN --mount=type=cache,target=/c echo\nFROM scratch\nCOPY --from=a /x /x\nADD https://e.org/f /f\n';
    const digest = async () => {
      const def = marshal((await convertDockerfile(text, { platform: amd64 })).state);
      return parseDefinition(def).result!.digest;
    };
    expect(await digest()).toBe(await digest());
  });
});

describe('long Dockerfiles', () => {
  it('converts 5,000 chained RUN steps, 5,000 chained stages and 2,500 COPY --from links without overflowing the call stack', async () => {
    const runs = 'FROM scratch\n' + Array.from({ length: 5000 }, (_, i) => `RUN true ${i}\n`).join('');
    expect(execs((await convert(runs)).def)).toHaveLength(5000);
    const stages = 'FROM scratch AS s0\nRUN true\n' + Array.from({ length: 5000 }, (_, i) => `FROM s${i} AS s${i + 1}\n`).join('');
    expect(execs((await convert(stages)).def)).toHaveLength(1);
    const links = 'FROM scratch AS s0\n' + Array.from({ length: 2500 }, (_, i) => `FROM scratch AS s${i + 1}\nCOPY --from=s${i} / /\n`).join('');
    expect(copies((await convert(links)).def)).toHaveLength(2500);
  }, 60_000);

  it('still finds a cycle through a long chain, naming the line that closes it', async () => {
    // s0 -> s3000 (line 2) -> s2999 -> ... -> s1 -> s0 (line 3: FROM s0 AS s1).
    const text = 'FROM scratch AS s0\nCOPY --from=s3000 / /\n' + Array.from({ length: 3000 }, (_, i) => `FROM s${i} AS s${i + 1}\n`).join('');
    await expect(convertDockerfile(text)).rejects.toMatchObject({ details: { line: 3 }, message: 'circular dependency detected on stage: s0' });
  });
});
