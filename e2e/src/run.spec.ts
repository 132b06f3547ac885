import { copyFileSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runKiln, startKilnd, type Kilnd } from '@kiln/testkit';
import { hasSshAgent, sshAddClient, startSshAgent } from '@kiln/worker/testing';

// A base with no registry: Debian's static busybox copied in from the context.
const BUSYBOX = '/bin/busybox';

describe.each(['oci', 'containerd'] as const)('RUN in a container [topology=all-in-one, worker=%s]', (worker) => {
  let daemon: Kilnd;
  let ctx: string;
  beforeAll(async () => {
    daemon = await startKilnd({ worker });
    ctx = mkdtempSync(join(tmpdir(), 'kiln-run-'));
    copyFileSync(BUSYBOX, join(ctx, 'busybox'));
    writeFileSync(join(ctx, 'greeting.txt'), 'hello from the context\n');
    writeFileSync(
      join(ctx, 'Dockerfile'),
      [
        'FROM scratch',
        'COPY --chmod=0755 busybox /bin/busybox',
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]',
        'ARG WHO=kiln',
        'ENV GREETING=hi',
        'WORKDIR /work',
        'COPY greeting.txt .',
        'RUN echo "$GREETING $WHO from $(pwd)" > out.txt && cat greeting.txt >> out.txt && id -u > uid.txt',
        'RUN --network=none ls /sys/class/net > /work/net.txt',
        '',
      ].join('\n'),
    );
  }, 60_000);
  afterAll(async () => {
    await daemon?.stop();
    rmSync(ctx, { recursive: true, force: true });
  });

  it('runs shell and exec form steps, with env, build args, workdir and the network sandbox', async () => {
    const out = join(ctx, 'out');
    const res = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '--build-arg', 'WHO=tests', '-o', `type=local,dest=${out}`, ctx]);
    expect(res.code, `${res.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
    expect(readFileSync(join(out, 'work', 'out.txt'), 'utf8')).toBe('hi tests from /work\nhello from the context\n');
    expect(readFileSync(join(out, 'work', 'uid.txt'), 'utf8').trim()).toBe('0');
    expect(readFileSync(join(out, 'work', 'net.txt'), 'utf8').trim()).toBe('lo');
    expect(statSync(join(out, 'bin', 'sh')).isFile()).toBe(true);
  });

  it('fails with the command, exit code and Dockerfile line when a step fails', async () => {
    const bad = mkdtempSync(join(tmpdir(), 'kiln-run-bad-'));
    copyFileSync(BUSYBOX, join(bad, 'busybox'));
    writeFileSync(join(bad, 'Dockerfile'), 'FROM scratch\nCOPY --chmod=0755 busybox /bin/busybox\nRUN ["/bin/busybox", "sh", "-c", "echo boom >&2; exit 3"]\n');
    const res = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '-o', `type=local,dest=${join(bad, 'out')}`, bad]);
    rmSync(bad, { recursive: true, force: true });
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/boom/);
    expect(res.stderr).toMatch(/ERROR: .*exit code: 3.*\(Dockerfile:3\)/);
  });

  it('writes --add-host entries into /etc/hosts of every RUN', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kiln-run-hosts-'));
    try {
      copyFileSync(BUSYBOX, join(dir, 'busybox'));
      writeFileSync(join(dir, 'Dockerfile'), 'FROM scratch\nCOPY --chmod=0755 busybox /bin/busybox\nRUN ["/bin/busybox", "cp", "/etc/hosts", "/hosts"]\n');
      const res = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '--add-host', 'db.internal:10.9.8.7', '-o', `type=local,dest=${join(dir, 'out')}`, dir]);
      expect(res.code, `${res.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
      expect(readFileSync(join(dir, 'out', 'hosts'), 'utf8')).toMatch(/^127\.0\.0\.1\tlocalhost \S+\n(.*\n)*10\.9\.8\.7\tdb\.internal\n$/);
      // The generated file is mounted, never committed (nor its /etc stub).
      expect(() => statSync(join(dir, 'out', 'etc'))).toThrow();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  (hasSshAgent() ? it : it.skip)('forwards --ssh default (an agent socket, or a key file served by the CLI) to RUN --mount=type=ssh; a required agent that is missing fails clearly (needs openssh-client)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kiln-run-ssh-'));
    const agent = await startSshAgent(join(dir, 'agent'));
    try {
      copyFileSync(BUSYBOX, join(dir, 'busybox'));
      await sshAddClient(join(dir, 'sshclient'));
      writeFileSync(join(dir, '.dockerignore'), 'agent\n');
      writeFileSync(
        join(dir, 'Dockerfile'),
        [
          'FROM scratch',
          'COPY --chmod=0755 busybox /bin/busybox',
          'RUN ["/bin/busybox", "--install", "-s", "/bin"]',
          'COPY sshclient /ssh',
          'RUN --mount=type=ssh /ssh/ld.so --library-path /ssh/lib /ssh/ssh-add -l > /keys && test -S "$SSH_AUTH_SOCK" && echo "$SSH_AUTH_SOCK" > /sock',
          '',
        ].join('\n'),
      );
      const out = join(dir, 'out');
      const res = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '--ssh', `default=${agent.socket}`, '-o', `type=local,dest=${out}`, dir]);
      expect(res.code, `${res.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
      // ssh-add in the step listed the key the client's agent holds.
      expect(readFileSync(join(out, 'keys'), 'utf8')).toBe(`${agent.fingerprint}\n`);
      expect(readFileSync(join(out, 'sock'), 'utf8')).toBe('/run/buildkit/ssh_agent.0\n');
      expect(() => statSync(join(out, 'run'))).toThrow();

      // The same key as a file (buildx's --ssh ID=KEYFILE): the CLI's own agent serves it
      // (the step changed, so it runs again instead of coming from the cache).
      rmSync(out, { recursive: true, force: true });
      writeFileSync(join(dir, 'Dockerfile'), readFileSync(join(dir, 'Dockerfile'), 'utf8').replace('> /keys', '> /keys # from a key file'));
      const fromFile = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '--ssh', `default=${join(dir, 'agent', 'key')}`, '-o', `type=local,dest=${out}`, dir]);
      expect(fromFile.code, `${fromFile.stderr}\n${daemon.logs().slice(-4000)}`).toBe(0);
      expect(readFileSync(join(out, 'keys'), 'utf8')).toBe(`${agent.fingerprint}\n`);

      writeFileSync(join(dir, 'Dockerfile'), 'FROM scratch\nCOPY --chmod=0755 busybox /bin/busybox\nRUN --mount=type=ssh,id=deploy,required=true ["/bin/busybox", "true"]\n');
      const missing = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', dir]);
      expect(missing.code).toBe(1);
      expect(missing.stderr).toMatch(/no SSH agent "deploy" was forwarded for the ssh mount at \/run\/buildkit\/ssh_agent\.0 \(pass --ssh deploy\)/);
    } finally {
      agent.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
