import { runFrontend } from '@kiln/frontend-sdk/testing';
import { kilnYamlFrontend } from './kiln-yaml-frontend.js';

const DIGEST = `sha256:${'b'.repeat(64)}`;
const busybox = { digest: DIGEST, config: { os: 'linux', architecture: 'amd64', config: { Env: ['PATH=/bin'], Cmd: ['sh'] } }, files: { '/etc/passwd': 'root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n', '/bin/sh': '' } };

const yaml = (body: string) => ({ dockerfile: { 'kiln.yaml': `# syntax=kiln-yaml.v0\n${body}` }, attrs: { filename: 'kiln.yaml' } });

describe('kiln.yaml frontend', () => {
  it('pins the base, copies files, runs commands and writes the image config', async () => {
    const run = await runFrontend(kilnYamlFrontend, {
      ...yaml('base: busybox:latest\nenv:\n  GREETING: hi\nworkdir: /app\nfiles:\n  - src: hello.sh\n    dest: /app/hello.sh\n    mode: "0755"\nrun:\n  - ./hello.sh > out\ncmd: ["/app/hello.sh"]\nexpose: [8080]\n'),
      images: { 'busybox:latest': busybox },
    });
    const ops = [...run.definition.ops.values()];
    const source = ops.find((o) => o.op.op.case === 'source' && o.op.op.value.identifier.startsWith('docker-image://'));
    expect(source?.op.op.case === 'source' && source.op.op.value.identifier).toBe(`docker-image://busybox:latest@${DIGEST}`);
    const exec = ops.find((o) => o.op.op.case === 'exec');
    expect(exec?.op.op.case === 'exec' && exec.op.op.value.meta?.args).toEqual(['/bin/sh', '-c', './hello.sh > out']);
    expect(exec?.op.op.case === 'exec' && exec.op.op.value.meta?.cwd).toBe('/app');
    expect(exec?.op.op.case === 'exec' && exec.op.op.value.meta?.env).toEqual(['PATH=/bin', 'GREETING=hi']);
    expect(exec?.metadata?.description).toBe('[kiln.yaml] run: ./hello.sh > out');
    expect(exec?.metadata?.ranges[0]?.startLine).toBe(11);
    expect(run.imageConfig?.config).toMatchObject({ Env: ['PATH=/bin', 'GREETING=hi'], WorkingDir: '/app', Cmd: ['/app/hello.sh'], ExposedPorts: { '8080/tcp': {} } });
    // No user and no packages: the base is never solved through the gateway.
    expect(run.calls).toEqual(['resolveImageConfig busybox:latest']);
  });

  it('checks user: against the base image /etc/passwd through the gateway', async () => {
    const ok = await runFrontend(kilnYamlFrontend, { ...yaml('base: busybox:latest\nuser: nobody\n'), images: { 'busybox:latest': busybox } });
    expect(ok.calls).toEqual(['resolveImageConfig busybox:latest', `solve docker-image://busybox:latest@${DIGEST}`, `readFile busybox:latest@${DIGEST} /etc/passwd`]);
    expect(ok.imageConfig?.config?.User).toBe('nobody');
    await expect(runFrontend(kilnYamlFrontend, { ...yaml('base: busybox:latest\n\nuser: ghost\n'), images: { 'busybox:latest': busybox } })).rejects.toThrow('kiln.yaml:4: user "ghost" is not in /etc/passwd of busybox:latest');
  });

  it('picks the package manager the base has, and names the line when it has none', async () => {
    const alpine = { ...busybox, files: { ...busybox.files, '/sbin/apk': '' } };
    const run = await runFrontend(kilnYamlFrontend, { ...yaml('base: alpine:3\npackages: [curl, git]\n'), images: { 'alpine:3': alpine } });
    const exec = [...run.definition.ops.values()].find((o) => o.op.op.case === 'exec');
    expect(exec?.op.op.case === 'exec' && exec.op.op.value.meta?.args[2]).toBe('apk add --no-cache curl git');
    await expect(runFrontend(kilnYamlFrontend, { ...yaml('base: busybox:latest\npackages: [curl]\n'), images: { 'busybox:latest': busybox } })).rejects.toThrow('kiln.yaml:3: packages: busybox:latest has neither apk nor apt-get');
  });

  it('rejects bad input naming the file and line', async () => {
    await expect(runFrontend(kilnYamlFrontend, yaml('base: scratch\nrunn:\n  - x\n'))).rejects.toThrow('kiln.yaml:3: unknown key "runn"');
    await expect(runFrontend(kilnYamlFrontend, yaml('run: [x]\n'))).rejects.toThrow('base is required');
    await expect(runFrontend(kilnYamlFrontend, yaml('base: scratch\nfiles:\n  - src: a\n    dest: rel/a\n'))).rejects.toThrow('kiln.yaml:5: files: dest must be an absolute path');
    await expect(runFrontend(kilnYamlFrontend, { attrs: { filename: 'kiln.yaml' } })).rejects.toThrow('kiln.yaml not found');
  });
});
