import { llb } from '@kiln/api';
import { localAttrs, marshal, parseDefinition, type ParsedDefinition } from '@kiln/llb';
import { describe, expect, it } from 'vitest';
import { convertDockerfile, type ConvertOptions } from './convert.js';

async function convert(text: string, opts: ConvertOptions = {}) {
  const res = await convertDockerfile(text, opts);
  const def = parseDefinition(marshal(res.state));
  return { ...res, def };
}

function resultExec(def: ParsedDefinition) {
  const op = def.ops.get(def.result!.digest)!;
  if (op.op.op.case !== 'exec') throw new Error(`result is ${op.op.op.case}`);
  return { exec: op.op.op.value, op };
}

function inputOf(def: ParsedDefinition, digestOwner: ReturnType<typeof resultExec>['op'], index: bigint) {
  return def.ops.get(digestOwner.op.inputs[Number(index)]!.digest as never)!;
}

describe('RUN --mount', () => {
  it('converts bind mounts from the context and from a stage, read-only by default, rw without an output', async () => {
    const { def } = await convert(
      'FROM scratch AS build\nCOPY x /x\nFROM scratch\nWORKDIR /src\nRUN --mount=type=bind,source=app,target=app --mount=from=build,src=/x,dst=/opt/x,rw /bin/true\n',
    );
    const { exec, op } = resultExec(def);
    const [root, x, app] = exec.mounts;
    expect(root).toMatchObject({ dest: '/', output: 0n });
    expect(app).toMatchObject({ dest: '/src/app', selector: '/app', readonly: true, output: -1n, mountType: llb.MountType.BIND });
    expect(x).toMatchObject({ dest: '/opt/x', selector: '/x', readonly: false, output: -1n });
    expect(inputOf(def, op, app!.input).op.op.case).toBe('source');
    expect(inputOf(def, op, x!.input).op.op.case).toBe('file');
    const ctx = [...def.ops.values()].find((o) => o.op.op.case === 'source')!.op.op;
    expect(ctx.case === 'source' && localAttrs(ctx.value.attrs).includePatterns).toEqual(['app', 'x']);
  });

  it('converts cache mounts: id defaults to the target, sharing, uid/gid/mode prepare the directory', async () => {
    const { def } = await convert(
      'FROM scratch\nRUN --mount=type=cache,target=/root/.cache --mount=type=cache,id=npm,target=/npm,sharing=locked,uid=1000,gid=1000,mode=0700 /bin/true\n',
    );
    const { exec, op } = resultExec(def);
    const npm = exec.mounts.find((m) => m.dest === '/npm')!;
    const cache = exec.mounts.find((m) => m.dest === '/root/.cache')!;
    expect(cache).toMatchObject({ input: -1n, output: -1n, readonly: false, mountType: llb.MountType.CACHE, cacheOpt: { id: '//root/.cache', sharing: llb.CacheSharing.SHARED } });
    expect(npm).toMatchObject({ selector: '/cache', mountType: llb.MountType.CACHE, cacheOpt: { id: '/npm', sharing: llb.CacheSharing.LOCKED } });
    const prep = inputOf(def, op, npm.input);
    const mkdir = prep.op.op.case === 'file' ? prep.op.op.value.actions[0]!.action : undefined;
    expect(mkdir?.case === 'mkdir' && mkdir.value).toMatchObject({ path: '/cache', mode: 0o700, owner: { user: { user: { case: 'id', value: 1000 } } } });
    expect(exec.mounts.map((m) => m.dest)).toEqual(['/', '/npm', '/root/.cache']);
  });

  it('converts tmpfs with a size, secrets (file, env, defaults) and ssh sockets as BuildKit', async () => {
    const { def, imageConfig } = await convert(
      [
        'FROM scratch',
        'ENV SAFE=1',
        'RUN --mount=type=tmpfs,target=/tmp,size=64m --mount=type=secret,id=npmrc --mount=type=secret,id=tok,env=TOKEN,required --mount=type=secret,src=aws,target=/root/.aws/creds,mode=0440,uid=5 --mount=type=ssh --mount=type=ssh,id=gh,target=/ssh/gh,required /bin/true',
      ].join('\n'),
    );
    const { exec } = resultExec(def);
    expect(exec.mounts.find((m) => m.dest === '/tmp')).toMatchObject({ mountType: llb.MountType.TMPFS, tmpfsOpt: { size: 64n * 1024n * 1024n }, input: -1n, output: -1n });
    const secrets = exec.mounts.filter((m) => m.mountType === llb.MountType.SECRET);
    expect(secrets.map((m) => [m.dest, m.secretOpt?.id, m.secretOpt?.mode, m.secretOpt?.uid, m.secretOpt?.optional])).toEqual([
      ['/run/secrets/npmrc', 'npmrc', 0o400, 0, true],
      ['/root/.aws/creds', 'aws', 0o440, 5, true],
    ]);
    expect(exec.secretEnv).toEqual([expect.objectContaining({ id: 'tok', name: 'TOKEN', optional: false })]);
    const ssh = exec.mounts.filter((m) => m.mountType === llb.MountType.SSH);
    expect(ssh.map((m) => [m.dest, m.sshOpt?.id, m.sshOpt?.mode, m.sshOpt?.optional])).toEqual([
      ['/run/buildkit/ssh_agent.0', 'default', 0o600, true],
      ['/ssh/gh', 'gh', 0o600, false],
    ]);
    expect(exec.meta?.env).toContain('SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0');
    // Secret ids and values never reach the env or the image config.
    expect(exec.meta?.env.join(' ')).not.toMatch(/tok|npmrc|aws/);
    expect(JSON.stringify(imageConfig)).not.toMatch(/npmrc|TOKEN|aws/);
  });

  it('expands variables in mount options and rejects bad ones with the line and a hint', async () => {
    const { def } = await convert('FROM scratch\nARG DIR=/work\nRUN --mount=type=cache,target=$DIR /bin/true\n');
    expect(resultExec(def).exec.mounts[1]).toMatchObject({ dest: '/work', cacheOpt: { id: '//work' } });
    await expect(convertDockerfile('FROM scratch\nRUN --mount=type=cahce,target=/x true\n')).rejects.toMatchObject({
      details: { line: 2 },
      message: expect.stringContaining('did you mean cache?'),
    });
    await expect(convertDockerfile('FROM scratch\nRUN --mount=type=bind,target=/x,sharing=locked true\n')).rejects.toThrow(/invalid cache sharing/);
    await expect(convertDockerfile('FROM scratch\nRUN --mount=type=bind,target=/x,mode=0700 true\n')).rejects.toThrow(/mode not allowed/);
    await expect(convertDockerfile('FROM scratch\nRUN --mount=type=secret,from=x,id=a true\n')).rejects.toThrow(/should not have a from/);
    await expect(convertDockerfile('FROM scratch\nRUN --mount=type=cache,target=/x,size=1m true\n')).rejects.toThrow(/unexpected key 'size'/);
    await expect(convertDockerfile('FROM scratch\nRUN --mount=type=ssh,src=x true\n')).rejects.toThrow(/ssh does not support source/);
  });
});

describe('RUN --security, --network and heredocs', () => {
  it('sets the security mode', async () => {
    expect(resultExec((await convert('FROM scratch\nRUN --security=insecure true\n')).def).exec.security).toBe(llb.SecurityMode.INSECURE);
    expect(resultExec((await convert('FROM scratch\nRUN --security=sandbox true\n')).def).exec.security).toBe(llb.SecurityMode.UNSPECIFIED);
    await expect(convertDockerfile('FROM scratch\nRUN --security=root true\n')).rejects.toThrow(/unsupported security mode/);
  });

  it('names the sandbox with the hostname option, or the BUILDKIT_SANDBOX_HOSTNAME build arg over it', async () => {
    const host = async (opts: ConvertOptions) => resultExec((await convert('FROM scratch\nRUN hostname\n', opts)).def).exec.meta?.hostname;
    expect(await host({})).toBe('');
    expect(await host({ hostname: 'box' })).toBe('box');
    expect(await host({ hostname: 'box', buildArgs: { BUILDKIT_SANDBOX_HOSTNAME: 'foo' } })).toBe('foo');
  });

  it('forceNetwork (--network) is the network of every RUN without --network; RUN --network wins', async () => {
    const text = 'FROM scratch\nRUN a\nRUN --network=none b\nRUN --network=default c\n';
    const nets = async (opts: ConvertOptions) => {
      const { def } = await convert(text, opts);
      const byArg = new Map<string, llb.NetMode>();
      for (const o of def.ops.values()) if (o.op.op.case === 'exec') byArg.set(o.op.op.value.meta!.args.at(-1)!, o.op.op.value.network);
      return [byArg.get('a'), byArg.get('b'), byArg.get('c')];
    };
    expect(await nets({})).toEqual([llb.NetMode.SANDBOX, llb.NetMode.NONE, llb.NetMode.SANDBOX]);
    expect(await nets({ forceNetwork: 'host' })).toEqual([llb.NetMode.HOST, llb.NetMode.NONE, llb.NetMode.SANDBOX]);
    expect(await nets({ forceNetwork: 'none' })).toEqual([llb.NetMode.NONE, llb.NetMode.NONE, llb.NetMode.SANDBOX]);
  });

  it('runs a plain heredoc with the shell, as BuildKit', async () => {
    const { def } = await convert('FROM scratch\nRUN <<EOF\necho a\necho b\nEOF\n');
    const { exec, op } = resultExec(def);
    expect(exec.meta?.args).toEqual(['/bin/sh', '-c', 'echo a\necho b\n']);
    expect(op.metadata?.description).toBe('[1/1] RUN <<EOF (echo a...)');
  });

  it('mounts a heredoc with a shebang as a script under /dev/pipes', async () => {
    const { def } = await convert('FROM scratch\nRUN <<SCRIPT\n#!/usr/bin/env python3\nprint(1)\nSCRIPT\n');
    const { exec, op } = resultExec(def);
    expect(exec.meta?.args).toEqual(['/bin/sh', '-c', '/dev/pipes/SCRIPT']);
    const pipes = exec.mounts.find((m) => m.dest === '/dev/pipes/')!;
    expect(pipes).toMatchObject({ readonly: true, selector: '/' });
    const file = inputOf(def, op, pipes.input);
    const mk = file.op.op.case === 'file' ? file.op.op.value.actions[0]!.action : undefined;
    expect(mk?.case === 'mkfile' && [mk.value.path, mk.value.mode, new TextDecoder().decode(mk.value.data)]).toEqual(['/SCRIPT', 0o755, '#!/usr/bin/env python3\nprint(1)\n']);
  });

  it('runs the shebang of a <<- heredoc whose tab-indented lines are stripped first, as BuildKit', async () => {
    const { def } = await convert('FROM scratch\nRUN <<-EOT\n\t#!/bin/busybox awk -f\n\tBEGIN { print 1 }\nEOT\n');
    const { exec, op } = resultExec(def);
    expect(exec.meta?.args).toEqual(['/bin/sh', '-c', '/dev/pipes/EOT']);
    const pipes = exec.mounts.find((m) => m.dest === '/dev/pipes/')!;
    const file = inputOf(def, op, pipes.input);
    const mk = file.op.op.case === 'file' ? file.op.op.value.actions[0]!.action : undefined;
    expect(mk?.case === 'mkfile' && new TextDecoder().decode(mk.value.data)).toBe('#!/bin/busybox awk -f\nBEGIN { print 1 }\n');
  });

  it('hands several heredocs to the shell as written', async () => {
    const { def } = await convert('FROM scratch\nRUN cat <<A > /a && cat <<B > /b\none\nA\ntwo\nB\n');
    expect(resultExec(def).exec.meta?.args).toEqual(['/bin/sh', '-c', 'cat <<A > /a && cat <<B > /b\none\nA\ntwo\nB']);
  });

  it('records RUN history with the build args as BuildKit', async () => {
    const { imageConfig } = await convert('FROM scratch\nARG A=1\nARG B\nRUN echo\n', { buildArgs: { B: '2' } });
    expect(imageConfig.history.map((h) => h.created_by)).toEqual(['ARG A=1', 'ARG B=2', 'RUN |2 A=1 B=2 /bin/sh -c echo # buildkit']);
    expect(imageConfig.history[2]).toMatchObject({ comment: 'buildkit.dockerfile.v0' });
    expect(imageConfig.history[2]!.empty_layer).toBeUndefined();
  });
});

describe('proxy build args', () => {
  it('reach every RUN without an ARG line (either case; lower case wins a tie), outside env, config and history', async () => {
    const buildArgs = { HTTP_PROXY: 'v-upper', http_proxy: 'v-hp', HTTPS_PROXY: 'v-hsp', ftp_proxy: 'v-fp', No_Proxy: 'v-np', ALL_PROXY: 'v-ap', FOO: 'f' };
    const { def, imageConfig } = await convert('FROM scratch\nARG FOO\nRUN echo $HTTP_PROXY\n', { buildArgs });
    const { exec } = resultExec(def);
    expect(exec.meta?.proxyEnv).toMatchObject({ httpProxy: 'v-hp', httpsProxy: 'v-hsp', ftpProxy: 'v-fp', noProxy: 'v-np', allProxy: 'v-ap' });
    expect(exec.meta?.env.some((e) => /proxy/i.test(e))).toBe(false);
    expect(JSON.stringify(imageConfig)).not.toMatch(/v-/);
    expect(imageConfig.history.at(-1)!.created_by).toBe('RUN |1 FOO=f /bin/sh -c echo $HTTP_PROXY # buildkit');
  });

  it('sets none without proxy build args', async () => {
    const { def } = await convert('FROM scratch\nRUN true\n', { buildArgs: { FOO: '1' } });
    expect(resultExec(def).exec.meta?.proxyEnv).toBeUndefined();
  });
});
