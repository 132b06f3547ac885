import { describe, expect, it } from 'vitest';
import { formatOutline, outlineDockerfile } from './outline.js';

const DOCKERFILE = `# BASE_VERSION version of the base
ARG BASE_VERSION=3
ARG unused=1
# SFX suffix for the base
ARG SFX=-v\${BASE_VERSION}

FROM busybox:\${SFX} AS deps
# PROXY the proxy to use
ARG PROXY
RUN --mount=type=secret,id=npmrc,required --mount=type=ssh echo

FROM busybox AS tools
ARG TOOLS_ONLY=1
RUN --mount=type=ssh,id=gitlab,required echo

# build builds the app
FROM deps AS build
ARG MODE=release
COPY --from=tools /x /x
RUN --mount=type=secret,target=/run/secrets/token echo
`;

describe('--call outline (BuildKit frontend.outline)', () => {
  it('lists the args, secrets and ssh of the target and the stages it needs, as BuildKit counts them', () => {
    const o = outlineDockerfile(DOCKERFILE, { target: 'build', buildArgs: { MODE: 'debug' } });
    expect(o.name).toBe('build');
    expect(o.description).toBe('builds the app');
    // Global ARGs count when a FROM uses them (with what their defaults use); every stage ARG counts.
    expect(o.args?.map((a) => [a.name, a.value ?? '', a.description ?? '', a.location?.ranges[0]?.start.line])).toEqual([
      ['BASE_VERSION', '3', 'version of the base', 2],
      ['SFX', '-v3', 'suffix for the base', 5],
      ['PROXY', '', 'the proxy to use', 9],
      ['TOOLS_ONLY', '1', '', 13],
      ['MODE', 'debug', '', 18],
    ]);
    expect(o.secrets).toEqual([
      { name: 'npmrc', required: true, location: { ranges: [{ start: { line: 10 }, end: { line: 10 } }] } },
      { name: 'token', location: { ranges: [{ start: { line: 20 }, end: { line: 20 } }] } },
    ]);
    expect(o.ssh?.map((s) => [s.name, s.required ?? false])).toEqual([
      ['default', false],
      ['gitlab', true],
    ]);
  });

  it('prints the tables buildx prints', () => {
    const txt = formatOutline(outlineDockerfile(DOCKERFILE, { target: 'tools' }));
    expect(txt).toBe(
      'TARGET: tools\n\n' +
        'BUILD ARG    VALUE   DESCRIPTION\n' +
        'TOOLS_ONLY   1       \n\n' +
        'SSH      REQUIRED\n' +
        'gitlab   true\n\n',
    );
  });
});

describe('--call outline on buildx\'s own example', () => {
  it('names secrets by id or target basename, expands build args, skips stages the target does not need', () => {
    const text = [
      '',
      'FROM busybox AS first',
      'RUN --mount=type=secret,target=/etc/passwd,required=true --mount=type=ssh true',
      '',
      'FROM alpine AS second',
      'RUN --mount=type=secret,id=unused --mount=type=ssh,id=ssh2 true',
      '',
      'FROM scratch AS third',
      'ARG BAR',
      'RUN --mount=type=secret,id=second${BAR} true',
      '',
      'FROM third AS target',
      'COPY --from=first /foo /',
      'RUN --mount=type=ssh,id=ssh3,required true',
      '',
      'FROM second',
    ].join('\n');
    const o = outlineDockerfile(text, { target: 'target', buildArgs: { BAR: '678' } });
    expect(o.name).toBe('target');
    expect(o.args?.map((a) => [a.name, a.value])).toEqual([['BAR', '678']]);
    expect(o.secrets?.map((s) => [s.name, s.required ?? false])).toEqual([['passwd', true], ['second678', false]]);
    expect(o.ssh?.map((s) => [s.name, s.required ?? false])).toEqual([['default', false], ['ssh3', true]]);
    expect(o.sources).toHaveLength(1);
  });
});
