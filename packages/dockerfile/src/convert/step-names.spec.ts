import { marshal, parseDefinition } from '@kiln/llb';
import { describe, expect, it } from 'vitest';
import { convertDockerfile, type ConvertOptions } from './convert.js';
import type { ImageMetaResolver } from './image-meta.js';

/** A resolver that knows every image, with an empty config (or the given ONBUILD triggers). */
const resolver = (onBuild: string[] = []): ImageMetaResolver => ({
  resolve: async () => ({ digest: `sha256:${'a'.repeat(64)}`, config: { os: 'linux', architecture: 'amd64', config: { OnBuild: onBuild }, rootfs: { type: 'layers', diff_ids: [] } } }),
});

/** The progress names of every vertex of the converted build, sorted. */
async function names(text: string, opts: ConvertOptions = {}): Promise<string[]> {
  const res = await convertDockerfile(text, { imageResolver: resolver(), ...opts });
  const def = parseDefinition(marshal(res.state));
  return [...def.ops.values()].map((op) => op.metadata?.description ?? '').filter((d) => d && !d.startsWith('[internal]')).sort();
}

describe('step names, as BuildKit prints them', () => {
  it('counts the FROM of an image and ADD/COPY/RUN/WORKDIR only, and labels each stage', async () => {
    const text = 'FROM busybox AS base\nENV A=1\nWORKDIR /out\nRUN echo "base" > base\nFROM scratch\nLABEL x=y\nCOPY --from=base --chmod=0644 /out /out\n';
    expect(await names(text)).toEqual([
      '[base 1/3] FROM busybox',
      '[base 2/3] WORKDIR /out',
      '[base 3/3] RUN echo "base" > base',
      '[stage-1 1/1] COPY --from=base --chmod=0644 /out /out',
    ]);
  });

  it('drops the stage label when the Dockerfile has one stage that reads no image, and pads the index to the total', async () => {
    const runs = Array.from({ length: 10 }, (_, i) => `RUN echo ${i}`).join('\n');
    const got = await names(`FROM busybox\n${runs}\n`);
    expect(got).toContain('[ 1/11] FROM busybox');
    expect(got).toContain('[ 2/11] RUN echo 0');
    expect(got).toContain('[11/11] RUN echo 9');
    // A COPY --from of an image is a second source: the label comes back.
    expect(await names('FROM scratch\nCOPY --from=busybox /bin/sh /sh\n')).toContain('[stage-0 1/1] COPY --from=busybox /bin/sh /sh');
  });

  it('counts a WORKDIR / but gives it no name (it makes no vertex), and a stage based on another stage has no FROM step', async () => {
    expect(await names('FROM busybox AS a\nWORKDIR /\nRUN true\nFROM a\nRUN false\n')).toEqual([
      '[a 1/3] FROM busybox',
      '[a 2/3] RUN true',
      '[stage-1 1/1] RUN false',
    ]);
  });

  it('shows RUN with its variables expanded, quotes and unset names kept, and secret env variables masked', async () => {
    const text = [
      'FROM busybox',
      'ARG WHO=world',
      'ENV SECRET_ENV=foo',
      'RUN echo "hello $WHO" $UNSET',
      'RUN --mount=type=secret,id=s,env=SECRET_ENV [ "$SECRET_ENV" == "pw" ] && echo ${WHO}',
      'run echo lower',
      '',
    ].join('\n');
    expect(await names(text)).toEqual([
      '[1/4] FROM busybox',
      '[2/4] RUN echo "hello world" $UNSET',
      '[3/4] RUN --mount=type=secret,id=s,env=SECRET_ENV [ "****" == "pw" ] && echo world',
      '[4/4] RUN echo lower',
    ]);
  });

  it('shows COPY and WORKDIR expanded as words (quotes removed)', async () => {
    expect(await names('FROM scratch\nARG D=/app\nWORKDIR $D\nCOPY "a" ${D}/\n')).toEqual(['[1/2] WORKDIR /app', '[2/2] COPY a /app/']);
  });

  it('numbers the base image ONBUILD triggers before the stage steps, marked ONBUILD', async () => {
    const got = await names('FROM base\nRUN two\n', { imageResolver: resolver(['RUN one']) });
    expect(got).toEqual(['[1/3] FROM base', '[2/3] ONBUILD RUN one', '[3/3] RUN two']);
  });
});

describe('TARGETSTAGE', () => {
  const text = 'FROM scratch AS base\nARG TARGETSTAGE\nENV T=$TARGETSTAGE\nFROM base AS foo\nFROM base\n';
  const targetEnv = async (opts: ConvertOptions) => (await convertDockerfile(text, opts)).imageConfig.config.Env;

  it('is the --target as given, else the last stage name, else "default"', async () => {
    expect(await targetEnv({ target: 'foo' })).toContain('T=foo');
    expect(await targetEnv({})).toContain('T=default');
    const named = (await convertDockerfile(`${text}FROM base AS final\n`)).imageConfig.config.Env;
    expect(named).toContain('T=final');
  });

  it('is not set before its ARG line, and a build arg overrides it', async () => {
    const early = await convertDockerfile('FROM scratch\nENV T=x$TARGETSTAGE\n');
    expect(early.imageConfig.config.Env).toContain('T=x');
    expect(await targetEnv({ buildArgs: { TARGETSTAGE: 'custom' } })).toContain('T=custom');
  });
});
