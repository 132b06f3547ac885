import { describe, expect, it } from 'vitest';
import { parseCheckDirective } from './checks.js';
import { convertDockerfile, type ConvertOptions } from './convert.js';

const amd64 = { os: 'linux', architecture: 'amd64' };

/** The build-check warnings of a Dockerfile as "LINE: Rule: message". */
async function lint(text: string, opts: ConvertOptions = {}): Promise<string[]> {
  const { warnings } = await convertDockerfile(text, { platform: amd64, buildPlatform: amd64, ...opts });
  return warnings.map((w) => `${w.line}: ${w.rule}: ${w.message}`);
}

describe('build checks, as BuildKit reports them', () => {
  it('FromAsCasing: AS must follow the case of FROM, a mixed-case FROM is left alone', async () => {
    expect(await lint('FROM scratch as a\nFROM scratch AS b\nfrom scratch As c\nfrom scratch as d\nFrom scratch as e\n')).toEqual(
      expect.arrayContaining(["1: FromAsCasing: 'as' and 'FROM' keywords' casing do not match", "3: FromAsCasing: 'As' and 'from' keywords' casing do not match"]),
    );
    expect((await lint('FROM scratch AS b\nfrom scratch as d\nFrom scratch as e\n')).filter((w) => w.includes('FromAsCasing'))).toEqual([]);
  });

  it('StageNameCasing, DuplicateStageName and ReservedStageName', async () => {
    expect(await lint('FROM scratch AS Build\nFROM scratch AS build\nFROM scratch AS context\nFROM scratch AS scratch\n')).toEqual([
      "1: StageNameCasing: Stage name 'Build' should be lowercase",
      '2: DuplicateStageName: Duplicate stage name "build", stage names should be unique',
      '3: ReservedStageName: Stage name should not use the same name as reserved stage "context"',
      '4: ReservedStageName: Stage name should not use the same name as reserved stage "scratch"',
    ]);
  });

  it('a repeated stage name refers to the last stage of that name, as in BuildKit', async () => {
    const { imageConfig } = await convertDockerfile('FROM scratch AS x\nENV WHICH=first\nFROM scratch AS x\nENV WHICH=second\nFROM x\n', { platform: amd64 });
    expect(imageConfig.config.Env).toContain('WHICH=second');
  });

  it('JSONArgsRecommended for shell-form CMD and ENTRYPOINT, unless a SHELL was chosen', async () => {
    expect(await lint('FROM scratch\nENTRYPOINT run me\nCMD go\n')).toEqual([
      '2: JSONArgsRecommended: JSON arguments recommended for ENTRYPOINT to prevent unintended behavior related to OS signals',
      '3: JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals',
    ]);
    expect(await lint('FROM scratch\nSHELL ["/bin/bash", "-c"]\nENTRYPOINT run me\nCMD go\nRUN true\n')).toEqual([]);
  });

  it('ConsistentInstructionCasing against the majority, not counting the ARGs before FROM', async () => {
    expect(await lint('arg A=1\narg B=2\narg C=3\nFROM scratch\nENV X=1\nrun true\n')).toEqual([
      "6: ConsistentInstructionCasing: Command 'run' should match the case of the command majority (uppercase)",
    ]);
  });

  it('UndefinedVar with a "did you mean" from the variables in scope; RUN words are the shell\'s', async () => {
    expect(await lint('FROM scratch\nENV PATH=/bin\nENV P2=$PAHT:/x\nCOPY $NOPE /x\nRUN echo $ALSO_NOPE\n')).toEqual([
      "3: UndefinedVar: Usage of undefined variable '$PAHT' (did you mean $PATH?)",
      "4: UndefinedVar: Usage of undefined variable '$NOPE'",
    ]);
    expect(await lint('FROM scratch\nARG DECLARED\nCOPY $DECLARED /x\n')).toEqual([]);
  });

  it('UndefinedArgInFrom on the image and --platform, with a suggestion, for every stage', async () => {
    expect(await lint('ARG VERSION=1\nFROM scratch AS unused\nFROM --platform=$BUILDPLATFROM busybox:$VERSIN\nFROM scratch\n')).toEqual([
      '3: InvalidDefaultArgInFrom: Default value for ARG busybox:$VERSIN results in empty or invalid base image name',
      "3: UndefinedArgInFrom: FROM argument 'VERSIN' is not declared (did you mean VERSION?)",
      "3: UndefinedArgInFrom: FROM argument 'BUILDPLATFROM' is not declared (did you mean BUILDPLATFORM?)",
    ]);
  });

  it('InvalidDefaultArgInFrom when the defaults alone give no valid image, even if a build arg fixes it', async () => {
    const text = 'ARG TAG\nFROM busybox:${TAG}\n';
    expect(await lint(text, { buildArgs: { TAG: '1.36' } })).toEqual(['2: InvalidDefaultArgInFrom: Default value for ARG busybox:${TAG} results in empty or invalid base image name']);
    expect(await lint('ARG TAG=1.36\nFROM busybox:${TAG}\n')).toEqual([]);
  });

  it('FromPlatformFlagConstDisallowed, except for a stage named for its platform; RedundantTargetPlatform', async () => {
    expect(
      await lint('FROM --platform=linux/arm64 scratch AS build\nFROM --platform=linux/arm64 scratch AS build-arm64\nFROM --platform=$TARGETPLATFORM scratch AS t\nFROM --platform=$BUILDPLATFORM scratch\n'),
    ).toEqual([
      '1: FromPlatformFlagConstDisallowed: FROM --platform flag should not use constant value "linux/arm64"',
      '3: RedundantTargetPlatform: Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior',
    ]);
  });

  it('WorkdirRelativePath only for the first WORKDIR of a stage chain', async () => {
    // Only the stages the build needs are checked, as in BuildKit.
    expect(await lint('FROM scratch AS a\nWORKDIR rel\nWORKDIR more\nFROM a\nWORKDIR again\n')).toEqual([
      '2: WorkdirRelativePath: Relative workdir "rel" can have unexpected results if the base image changes',
    ]);
    expect(await lint('FROM scratch\nWORKDIR /abs\nWORKDIR sub\n')).toEqual([]);
  });

  it('MultipleInstructionsDisallowed names the earlier instruction, the one that is ignored', async () => {
    expect(await lint('FROM scratch AS a\nCMD ["x"]\nFROM a\nCMD ["a"]\nCMD ["b"]\nHEALTHCHECK NONE\nHEALTHCHECK NONE\nENTRYPOINT ["e"]\n')).toEqual([
      '4: MultipleInstructionsDisallowed: Multiple CMD instructions should not be used in the same stage because only the last one will be used',
      '6: MultipleInstructionsDisallowed: Multiple HEALTHCHECK instructions should not be used in the same stage because only the last one will be used',
    ]);
  });

  it('SecretsUsedInArgOrEnv on _-separated secret words of stage ARG and ENV keys', async () => {
    expect(await lint('ARG GLOBAL_TOKEN=x\nFROM scratch\nARG GITHUB_TOKEN\nENV DB_PASSWORD=x AUTH=y PUBLIC_KEY=z TOKENIZER=w MY-KEY=v\n')).toEqual([
      '3: SecretsUsedInArgOrEnv: Do not use ARG or ENV instructions for sensitive data (ARG "GITHUB_TOKEN")',
      '4: SecretsUsedInArgOrEnv: Do not use ARG or ENV instructions for sensitive data (ENV "DB_PASSWORD")',
      '4: SecretsUsedInArgOrEnv: Do not use ARG or ENV instructions for sensitive data (ENV "AUTH")',
    ]);
  });

  it('LegacyKeyValueFormat, MaintainerDeprecated and NoEmptyContinuation', async () => {
    expect(await lint('FROM scratch\nENV A 1\nLABEL b 2\nMAINTAINER me\n')).toEqual([
      '2: LegacyKeyValueFormat: "ENV key=value" should be used instead of legacy "ENV key value" format',
      '3: LegacyKeyValueFormat: "LABEL key=value" should be used instead of legacy "LABEL key value" format',
      '4: MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label',
    ]);
    expect(await lint('FROM scratch\nRUN a \\\n\n  b\n')).toEqual(['4: NoEmptyContinuation: Empty continuation line']);
  });

  it('ExposeProtoCasing and ExposeInvalidFormat; EXPOSE splits expanded words and drops host parts', async () => {
    const { warnings, imageConfig } = await convertDockerfile('FROM scratch\nARG PORTS="80 443/UDP"\nEXPOSE $PORTS 127.0.0.1:8080:8080/tcp 9000:9001\n', { platform: amd64 });
    expect(warnings.map((w) => `${w.line}: ${w.rule}: ${w.message}`)).toEqual([
      "3: ExposeProtoCasing: Defined protocol '443/UDP' in EXPOSE instruction should be lowercase",
      "3: ExposeInvalidFormat: EXPOSE instruction should not define an IP address or host-port mapping, found '127.0.0.1:8080:8080/tcp'",
      "3: ExposeInvalidFormat: EXPOSE instruction should not define an IP address or host-port mapping, found '9000:9001'",
    ]);
    expect(Object.keys(imageConfig.config.ExposedPorts ?? {})).toEqual(['80/tcp', '443/udp', '8080/tcp', '9001/tcp']);
    expect(imageConfig.history.at(-1)!.created_by).toBe('EXPOSE [80/tcp 443/udp 8080/tcp 9001/tcp]');
    const sorted = await convertDockerfile('FROM scratch\nEXPOSE 2375 5000 1234/udp\n', { platform: amd64 });
    expect(sorted.imageConfig.history.at(-1)!.created_by).toBe('EXPOSE [1234/udp 2375/tcp 5000/tcp]');
    await expect(convertDockerfile('FROM scratch\nEXPOSE 80/http\n')).rejects.toMatchObject({ details: { line: 2 }, message: expect.stringContaining('invalid proto: http') });
  });
});

describe('InvalidBaseImagePlatform', () => {
  it('warns when the registry gives an image of another platform than the one asked for', async () => {
    const resolver = { resolve: async () => ({ digest: `sha256:${'e'.repeat(64)}`, config: { os: 'linux', architecture: 'arm64', config: {} } }) };
    expect(await lint('FROM example.com/only-arm:1\n', { imageResolver: resolver })).toEqual([
      '1: InvalidBaseImagePlatform: Base image example.com/only-arm:1 was pulled with platform "linux/arm64", expected "linux/amd64" for current build',
    ]);
    expect(await lint('FROM example.com/only-arm:1\n', { imageResolver: resolver, platform: { os: 'linux', architecture: 'arm64' } })).toEqual([]);
  });
});

describe('# check= and BUILDKIT_DOCKERFILE_CHECK', () => {
  it('skips listed rules or all of them', async () => {
    expect(await lint('# check=skip=JSONArgsRecommended,MaintainerDeprecated\nFROM scratch\nMAINTAINER me\nCMD run\nENV A 1\n')).toEqual([
      '5: LegacyKeyValueFormat: "ENV key=value" should be used instead of legacy "ENV key value" format',
    ]);
    expect(await lint('# check=skip=all\nFROM scratch\nMAINTAINER me\nCMD run\n')).toEqual([]);
  });

  it('skips rules for one instruction with a # check= comment right above it, anywhere in the file', async () => {
    expect(await lint('\nFROM scratch\n# check=skip=WorkdirRelativePath\nWORKDIR app/\n')).toEqual([]);
    // Only that instruction: the next one still reports, and another rule on the same line too.
    expect(await lint('FROM scratch\n# a note\n# check=skip=JSONArgsRecommended other words\nCMD run\nENTRYPOINT run\n')).toEqual([
      '5: JSONArgsRecommended: JSON arguments recommended for ENTRYPOINT to prevent unintended behavior related to OS signals',
    ]);
    expect(await lint('FROM scratch\n# check=skip=all\nWORKDIR app/\n')).toEqual([]);
    // A value that does not parse is ignored there (not an error, unlike the file's directive).
    expect(await lint('FROM scratch\n# check=bogus\nWORKDIR app/\n')).toEqual(['3: WorkdirRelativePath: Relative workdir "app/" can have unexpected results if the base image changes']);
  });

  it('turns warnings into an error naming every rule and line with error=true', async () => {
    const err = await convertDockerfile('# check=error=true\nFROM scratch as x\nCMD run\n', { filename: 'app.Dockerfile' }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'source', details: { file: 'app.Dockerfile', line: 2 } });
    expect((err as Error).message).toMatch(/^lint violation found for rules: FromAsCasing, JSONArgsRecommended/);
    expect((err as Error).message).toContain('app.Dockerfile:3: JSONArgsRecommended');
    // Skipped rules do not fail the build.
    await expect(convertDockerfile('# check=skip=JSONArgsRecommended;error=true\nFROM scratch\nCMD run\n')).resolves.toBeDefined();
  });

  it('takes the build arg over the directive, which is not also a comment of the first instruction', async () => {
    const err = await convertDockerfile('#check=skip=all\nFROM scratch as base\ncopy Dockerfile .\n', {
      buildArgs: { BUILDKIT_DOCKERFILE_CHECK: 'skip=ConsistentInstructionCasing;error=true' },
    }).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/^lint violation found for rules: FromAsCasing/);
  });

  it('takes the build arg over the directive', async () => {
    expect(await lint('# check=skip=all\nFROM scratch\nCMD run\n', { buildArgs: { BUILDKIT_DOCKERFILE_CHECK: 'skip=MaintainerDeprecated' } })).toEqual([
      '3: JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals',
    ]);
  });

  it('rejects malformed values, naming the directive line or the build arg', async () => {
    expect(() => parseCheckDirective('skip=A;error=maybe')).toThrow(/failed to parse check option "error=maybe"/);
    expect(() => parseCheckDirective('skip')).toThrow(/invalid check option "skip"/);
    expect(() => parseCheckDirective('warn=true')).toThrow(/invalid check option "warn"/);
    expect(parseCheckDirective(' error=1 ; skip=A, B ')).toEqual({ skip: new Set(['A', 'B']), skipAll: false, error: true });
    await expect(convertDockerfile('# syntax=docker/dockerfile:1\n# check=eror=true\nFROM scratch\n')).rejects.toMatchObject({
      code: 'source',
      details: { line: 2 },
      message: expect.stringContaining('failed to parse check options: invalid check option "eror"'),
    });
    await expect(convertDockerfile('FROM scratch\n', { buildArgs: { BUILDKIT_DOCKERFILE_CHECK: 'error=yes' } })).rejects.toMatchObject({
      code: 'invalid_argument',
      details: { field: 'build-arg:BUILDKIT_DOCKERFILE_CHECK' },
    });
  });
});
