import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { llb, type events } from '@kiln/api';
import { KilnError, silentLogger } from '@kiln/common';
import { FileChain, State } from '@kiln/llb';
import { createDirectorySnapshotter } from '@kiln/snapshotter';
import { createWorker, type Worker } from './worker.js';
import { createEventCollector, createFakeSession, execState, FakeExecutor, outputOf, readTar, solve, type FakeExecHandler } from './testing/index.js';

describe('exec ops through the Executor seam', () => {
  let root: string;
  let worker: Worker;
  let executor: FakeExecutor;
  let collector: ReturnType<typeof createEventCollector>;
  const enc = (s: string) => new TextEncoder().encode(s);
  const base = () =>
    FileChain.start()
      .mkdir('/etc', 0o755)
      .mkfile('/etc/passwd', 0o644, enc('root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n'))
      .mkfile('/etc/group', 0o644, enc('root:x:0:\napp:x:1001:\nextra:x:2000:app\n'))
      .apply(State.scratch());

  const setup = (handler?: FakeExecHandler) => {
    executor = new FakeExecutor(handler);
    collector = createEventCollector();
    worker = createWorker({
      id: 'w1',
      backend: 'oci',
      snapshotter: createDirectorySnapshotter({ root: path.join(root, 'snapshots') }),
      executor,
      sessions: createFakeSession().client,
      publish: collector.publish,
      logger: silentLogger(),
    });
  };

  beforeEach(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'kiln-exec-spec-'));
  });
  afterEach(async () => {
    await worker.close();
    await rm(root, { recursive: true, force: true });
  });

  it('gives the step its proxy settings in upper and lower case, after its own env', async () => {
    setup();
    await solve(worker, execState(base(), ['/bin/tool'], { env: ['A=1'], proxyEnv: { httpProxy: 'hp', noProxy: 'np' } }));
    expect(executor.calls[0]!.process.env).toEqual([
      'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      'A=1',
      'HTTP_PROXY=hp',
      'http_proxy=hp',
      'NO_PROXY=np',
      'no_proxy=np',
    ]);
  });

  it('runs on a writable copy of input 0 and commits what the process wrote', async () => {
    setup(async (spec, io) => {
      expect(await readFile(path.join(spec.rootfs, 'etc/passwd'), 'utf8')).toContain('app:x:1000');
      await writeFile(path.join(spec.rootfs, 'out'), 'made');
      io.stdout?.(enc('hello '));
      io.stdout?.(enc('world\n'));
      io.stderr?.(enc('warn\n'));
    });
    const ref = await solve(worker, execState(base(), ['/bin/tool', 'arg'], { env: ['A=1'], cwd: '/work/dir', user: 'app' }));
    const entries = await readTar(worker.exportRef(ref!));
    expect(entries.map((e) => e.name)).toEqual(['etc/', 'etc/group', 'etc/passwd', 'out', 'work/', 'work/dir/']);
    const spec = executor.calls[0]!;
    expect(spec.process).toEqual({
      args: ['/bin/tool', 'arg'],
      env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'A=1'],
      cwd: '/work/dir',
      user: { uid: 1000, gid: 1001, additionalGids: [1001, 2000] },
    });
    expect(spec).toMatchObject({ readonlyRootfs: false, network: 'sandbox', hostname: 'kiln' });
    // Only the generated /etc/hosts and /etc/resolv.conf, as read-only file binds.
    expect(spec.mounts).toEqual([
      { type: 'bind', source: expect.stringMatching(/\/hosts$/), dest: '/etc/hosts', readonly: true },
      { type: 'bind', source: expect.stringMatching(/\/resolv\.conf$/), dest: '/etc/resolv.conf', readonly: true },
    ]);
    const logs = collector.events.filter((e) => e.event.event.case === 'log').map((e) => e.event.event.value as events.VertexLog);
    expect(logs.map((l) => [l.stream, new TextDecoder().decode(l.msg)])).toEqual([
      [1, 'hello '],
      [1, 'world\n'],
      [2, 'warn\n'],
    ]);
  });

  it('does not change the input snapshot', async () => {
    setup(async (spec) => writeFile(path.join(spec.rootfs, 'etc/passwd'), 'clobbered'));
    const b = base();
    const input = await solve(worker, b);
    const ref = await solve(worker, execState(b, ['x']));
    const before = await readTar(worker.exportRef(input!));
    expect(before.find((e) => e.name === 'etc/passwd')!.data.toString()).toContain('root:x:0');
    const after = await readTar(worker.exportRef(ref!));
    expect(after.find((e) => e.name === 'etc/passwd')!.data.toString()).toBe('clobbered');
  });

  it('passes read-only input mounts (with selector), tmpfs and output mounts, and the network mode', async () => {
    setup(async (spec) => {
      const out = spec.mounts.find((m) => m.dest === '/out');
      if (out?.type === 'bind') await writeFile(path.join(out.source, 'result'), 'r');
    });
    const b = base();
    const s = execState(b, ['x'], {
      network: llb.NetMode.NONE,
      mounts: [
        { dest: '/src', state: b, selector: '/etc', readonly: true },
        { dest: '/tmp', tmpfs: true },
        { dest: '/out', output: true },
      ],
    });
    const ref = await solve(worker, outputOf(s, 1));
    const spec = executor.calls[0]!;
    expect(spec.network).toBe('none');
    expect(spec.mounts).toEqual([
      { type: 'bind', source: expect.stringMatching(/\/etc$/), dest: '/src', readonly: true },
      { type: 'tmpfs', dest: '/tmp', sizeBytes: undefined },
      { type: 'bind', source: expect.any(String), dest: '/out', readonly: false },
      { type: 'bind', source: expect.stringMatching(/\/hosts$/), dest: '/etc/hosts', readonly: true },
      { type: 'bind', source: expect.stringMatching(/\/resolv\.conf$/), dest: '/etc/resolv.conf', readonly: true },
    ]);
    expect((await readTar(worker.exportRef(ref!))).map((e) => e.name)).toEqual(['result']);
  });

  it('fails with a VertexError on a non-zero exit, unless the code is listed valid', async () => {
    setup(() => 2);
    const s = execState(base(), ['false']);
    const err = (await solve(worker, s).catch((e: unknown) => e)) as KilnError;
    expect(err).toBeInstanceOf(KilnError);
    expect(err).toMatchObject({ code: 'vertex', message: 'process "false" did not complete successfully: exit code: 2' });
    expect(err.details.digest).toBe(s.output!.vertex.marshal().digest);
    await expect(solve(worker, execState(base(), ['false'], { validExitCodes: [0, 2] }))).resolves.toMatch(/^ref-/);
  });

  it('fails an ssh mount whose agent the session does not forward, naming the --ssh flag', async () => {
    setup();
    const s = execState(base(), ['x'], { mounts: [{ dest: '/agent' }], mountTypeOverride: llb.MountType.SSH });
    await expect(solve(worker, s)).rejects.toMatchObject({ code: 'vertex', message: expect.stringContaining('no SSH agent "default" was forwarded for the ssh mount at /agent (pass --ssh default)') });
  });

  it('maps an unknown user to a VertexError', async () => {
    setup();
    await expect(solve(worker, execState(base(), ['x'], { user: 'nobody' }))).rejects.toMatchObject({
      code: 'vertex',
      message: 'failed to set up the process: unable to find user nobody: no matching entries in passwd file',
    });
  });
});
