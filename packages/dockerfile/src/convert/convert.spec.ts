import { SourceError } from '@kiln/common';
import { localAttrs, marshal, parseDefinition } from '@kiln/llb';
import { describe, expect, it } from 'vitest';
import { convertDockerfile } from './convert.js';

async function ops(text: string, opts = {}) {
  const { state, imageConfig } = await convertDockerfile(text, opts);
  const def = parseDefinition(marshal(state));
  return { def, imageConfig, all: [...def.ops.values()] };
}

describe('convertDockerfile', async () => {
  it('turns FROM scratch + COPY into a context source with only the copied paths', async () => {
    const { all, def } = await ops('FROM scratch\nCOPY a.txt /a.txt\nCOPY dir /dir/\nCMD ["/a"]\n');
    const sources = all.filter((o) => o.op.op.case === 'source');
    expect(sources).toHaveLength(1);
    const src = sources[0]!.op.op;
    expect(src.case === 'source' && src.value.identifier).toBe('local://context');
    expect(src.case === 'source' && localAttrs(src.value.attrs).includePatterns).toEqual(['a.txt', 'dir']);
    const result = def.ops.get(def.result!.digest)!;
    expect(result.metadata?.description).toBe('[2/2] COPY dir /dir/');
    expect(result.metadata?.ranges[0]).toMatchObject({ startLine: 3, endLine: 3 });
  });

  it('converts only the stages the target needs', async () => {
    const text = 'FROM scratch AS a\nCOPY a /a\nFROM scratch AS b\nCOPY b /b\nFROM scratch AS c\nCOPY --from=a /a /x\n';
    const { all } = await ops(text);
    const src = all.find((o) => o.op.op.case === 'source')!.op.op;
    expect(src.case === 'source' && localAttrs(src.value.attrs).includePatterns).toEqual(['a']);
    const { all: onlyB } = await ops(text, { target: 'b' });
    const srcB = onlyB.find((o) => o.op.op.case === 'source')!.op.op;
    expect(srcB.case === 'source' && localAttrs(srcB.value.attrs).includePatterns).toEqual(['b']);
  });

  it('labels (--label) are set over the Dockerfile LABELs of the target', async () => {
    const { imageConfig } = await ops('FROM scratch\nLABEL foo=bar bar=old\n', { labels: { bar: 'baz', new: '1' } });
    expect(imageConfig.config.Labels).toEqual({ foo: 'bar', bar: 'baz', new: '1' });
  });

  it('SOURCE_DATE_EPOCH: the build arg, else a global ARG default; context and unset give none; invalid is an error', async () => {
    const epoch = async (text: string, buildArgs: Record<string, string> = {}) => (await convertDockerfile(text, { buildArgs })).sourceDateEpoch;
    const withDefault = 'ARG SOURCE_DATE_EPOCH=1700000001\nFROM scratch\n';
    expect(await epoch(withDefault)).toBe(1700000001);
    expect(await epoch(withDefault, { SOURCE_DATE_EPOCH: '1700000002' })).toBe(1700000002);
    expect(await epoch('FROM scratch\n', { SOURCE_DATE_EPOCH: '5' })).toBe(5);
    expect(await epoch('FROM scratch\n')).toBeUndefined();
    expect(await epoch(withDefault, { SOURCE_DATE_EPOCH: 'context' })).toBeUndefined();
    await expect(epoch('ARG SOURCE_DATE_EPOCH=not-a-timestamp\nFROM scratch\n')).rejects.toThrow('invalid SOURCE_DATE_EPOCH: not-a-timestamp');
    await expect(epoch('FROM scratch\n', { SOURCE_DATE_EPOCH: '-1' })).rejects.toThrow('invalid SOURCE_DATE_EPOCH: -1');
  });

  it('builds the image config', async () => {
    const { imageConfig } = await ops('FROM scratch\nENV A=1 B=two\nWORKDIR /app\nUSER 1000\nEXPOSE 80 53/udp\nLABEL x=y\nENTRYPOINT ["/bin/app"]\nCMD echo hi\n');
    expect(imageConfig.config).toMatchObject({
      Env: expect.arrayContaining(['A=1', 'B=two']),
      WorkingDir: '/app',
      User: '1000',
      ExposedPorts: { '80/tcp': {}, '53/udp': {} },
      Labels: { x: 'y' },
      Entrypoint: ['/bin/app'],
      Cmd: ['/bin/sh', '-c', 'echo hi'],
    });
  });

  it('turns RUN into an exec op on the stage root with env, workdir and user', async () => {
    const { def } = await ops('FROM scratch\nARG V=1\nENV P=/bin X=y\nWORKDIR /w\nUSER 7\nRUN --network=none echo $V\nRUN ["/bin/true", "a"]\n');
    const run = def.ops.get(def.result!.digest)!;
    expect(run.op.op.case).toBe('exec');
    const exec = run.op.op.case === 'exec' ? run.op.op.value : undefined;
    expect(exec?.meta).toMatchObject({ args: ['/bin/true', 'a'], cwd: '/w', user: '7' });
    expect(exec?.meta?.env).toEqual(expect.arrayContaining(['V=1', 'P=/bin', 'X=y']));
    expect(exec?.mounts[0]).toMatchObject({ dest: '/', output: 0n });
    const first = def.ops.get(run.op.inputs[0]!.digest as never)!;
    expect(first.op.op.case === 'exec' && first.op.op.value.meta?.args).toEqual(['/bin/sh', '-c', 'echo $V']);
    expect(first.op.op.case === 'exec' && first.op.op.value.network).toBe(3);
    expect(first.metadata?.description).toBe('[2/3] RUN --network=none echo 1');
  });

  it('is deterministic', async () => {
    const text = 'FROM scratch\nCOPY b a /d/\n';
    expect(marshal((await convertDockerfile(text)).state).def).toEqual(marshal((await convertDockerfile(text)).state).def);
  });

  it('names the file and line of errors', async () => {
    const err = await convertDockerfile('FROM scratch\nCOPY a b c\n', { filename: 'build.Dockerfile' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SourceError);
    expect((err as SourceError).details).toMatchObject({ file: 'build.Dockerfile', line: 2 });
    await expect(convertDockerfile('FROM scratch\n', { target: 'nope' })).rejects.toThrow(/target stage "nope"/);
  });
});
