import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { encodeTarHeader, readTarEntries, SourceError, tarPadding, tarTrailer } from '@kiln/common';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { startFakeDaemon, type FakeDaemon, type FakeDaemonOptions } from './testing/fixtures/fake-daemon.js';
import { main } from './main.js';

let dir: string;
let daemon: FakeDaemon | undefined;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'kiln-main-'));
  mkdirSync(join(dir, 'ctx', 'src'), { recursive: true });
  writeFileSync(join(dir, 'ctx', 'Dockerfile'), 'FROM scratch\nCOPY src /src\nCOPY missing /x\n');
  writeFileSync(join(dir, 'ctx', '.dockerignore'), '**/*.secret\n');
  writeFileSync(join(dir, 'ctx', 'src', 'app.sh'), 'echo app\n');
  chmodSync(join(dir, 'ctx', 'src', 'app.sh'), 0o755);
  writeFileSync(join(dir, 'ctx', 'src', 'db.secret'), 'nope');
});
afterEach(async () => {
  await daemon?.close();
  daemon = undefined;
  rmSync(dir, { recursive: true, force: true });
});

async function run(argv: string[], vars: Record<string, string | undefined> = {}, signal = new AbortController().signal) {
  const stdout = new PassThrough();
  const out: Buffer[] = [];
  stdout.on('data', (b: Buffer) => out.push(b));
  let stderr = '';
  const code = await main(argv, {
    daemonCommand: [],
    cwd: dir,
    vars: { PATH: process.env.PATH, KILN_ROOT: join(dir, 'root'), ...vars },
    stdout,
    stderr: { write: (s: string) => (stderr += s) } as never,
    signal,
  });
  return { code, stdout: Buffer.concat(out), stderr };
}

function tarOf(files: Record<string, string>): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const [name, data] of Object.entries(files)) {
    const bytes = Buffer.from(data);
    parts.push(
      encodeTarHeader({ name, type: 'file', mode: 0o640, mtime: 1_650_000_000, uid: 0, gid: 0, size: bytes.length, linkname: '', uname: '', gname: '' }),
      bytes,
      tarPadding(bytes.length),
    );
  }
  parts.push(tarTrailer());
  return Buffer.concat(parts);
}

async function tarNames(data: Uint8Array): Promise<string[]> {
  const names: string[] = [];
  async function* one() {
    yield data;
  }
  for await (const e of readTarEntries(one())) names.push(e.header.name);
  return names;
}

const T0 = 1_700_000_000_000;

/** A daemon that builds like the real one would talk: reads the Dockerfile, fetches context, writes outputs. */
function buildingDaemon(seen: { dockerfile?: string; context?: string[] }, extra: Partial<FakeDaemonOptions> = {}): FakeDaemonOptions {
  return {
    async solve(req, { session, emit }) {
      const df = await session.fetch('dockerfile', { include: [req.frontendAttrs.filename!], follow: [req.frontendAttrs.filename!] }).result;
      seen.dockerfile = Buffer.from((await session.read('dockerfile', req.frontendAttrs.filename!)).data).toString();
      expect(await tarNames(df.data)).toEqual(['Dockerfile']);
      emit({ vertexes: [{ digest: 'sha256:1', name: '[internal] load build definition from Dockerfile', started: timestampFromMs(T0), completed: timestampFromMs(T0 + 20) }] });
      const ctx = await session.fetch('context', { include: ['src'] }).result;
      seen.context = await tarNames(ctx.data);
      emit({ vertexes: [{ digest: 'sha256:2', name: '[1/2] COPY src /src', started: timestampFromMs(T0 + 30) }] });
      emit({ logs: [{ vertex: 'sha256:2', stream: 1, msg: Buffer.from('copied\n'), timestamp: timestampFromMs(T0 + 130) }] });
      emit({ vertexes: [{ digest: 'sha256:2', name: '[1/2] COPY src /src', started: timestampFromMs(T0 + 30), completed: timestampFromMs(T0 + 230) }] });
      for (const e of req.exporters) {
        const out = e.attrs['session.output'];
        if (!out) continue;
        const done = await session.write(out, e.type === 'local' ? tarOf({ 'src/app.sh': 'echo app\n' }) : Buffer.from(`${e.type} archive`));
        if (done.error) throw new Error(done.error);
      }
      if (extra.solve) return extra.solve(req, { session, emit });
      return { 'containerimage.digest': 'sha256:abc', 'containerimage.descriptor': Buffer.from(JSON.stringify({ size: 42 })).toString('base64') };
    },
  };
}

describe('kiln build', () => {
  it('builds: session serves the Dockerfile and filtered context, outputs land, progress and metadata are written', async () => {
    const seen: { dockerfile?: string; context?: string[] } = {};
    daemon = await startFakeDaemon(buildingDaemon(seen));
    const r = await run(['build', '--addr', daemon.address, '--progress=plain', '-o', 'out', '--metadata-file', 'meta/m.json', '--build-arg', 'V=1', 'ctx']);
    expect(r.stderr).not.toContain('ERROR');
    expect(r.code).toBe(0);
    expect(seen.dockerfile).toBe('FROM scratch\nCOPY src /src\nCOPY missing /x\n');
    expect(seen.context).toEqual(['src', 'src/app.sh']); // db.secret is in .dockerignore
    expect(r.stderr).toBe(
      [
        '#1 [internal] load build definition from Dockerfile',
        '#1 DONE 0.0s',
        '',
        '#2 [1/2] COPY src /src',
        '#2 0.100 copied',
        '#2 DONE 0.2s',
        '',
      ].join('\n'),
    );
    expect(readFileSync(join(dir, 'out', 'src', 'app.sh'), 'utf8')).toBe('echo app\n');
    expect(statSync(join(dir, 'out', 'src', 'app.sh')).mode & 0o777).toBe(0o640);
    const req = daemon.solveRequests[0]!;
    expect(JSON.parse(readFileSync(join(dir, 'meta', 'm.json'), 'utf8'))).toEqual({
      'containerimage.digest': 'sha256:abc',
      'containerimage.descriptor': { size: 42 },
      'buildx.build.ref': `default/default/${req.ref}`,
    });
    expect(req.ref).toMatch(/^[0-9a-z]{25}$/);
    expect(req.sessionId).not.toBe(req.ref);
    expect((await daemon.session(req.sessionId)).hello.dirs.map((d) => d.name)).toEqual(['context', 'dockerfile']);
    expect(req.frontend).toBe('dockerfile.v0');
    expect(req.frontendAttrs).toEqual({ filename: 'Dockerfile', 'build-arg:V': '1' });
    expect(req.exporters.map((e) => [e.type, e.attrs])).toEqual([['local', { 'session.output': 'out0' }]]);
  });

  it('-o - writes the tar to stdout; no output warning then', async () => {
    daemon = await startFakeDaemon(buildingDaemon({}));
    const r = await run(['build', '--addr', daemon.address, '-o', '-', 'ctx']);
    expect(r.code).toBe(0);
    expect(r.stdout.toString()).toBe('tar archive');
    expect(r.stderr).not.toContain('No output specified');
  });

  it('warns that the result stays in the build cache without outputs', async () => {
    daemon = await startFakeDaemon(buildingDaemon({}));
    const r = await run(['build', 'ctx'], { KILN_ADDR: daemon.address });
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/^WARNING: No output specified .*build result will only remain in the build cache/);
  });

  it('rawjson progress prints one JSON object per status', async () => {
    daemon = await startFakeDaemon(buildingDaemon({}));
    const r = await run(['build', '--addr', daemon.address, '--progress', 'rawjson', '-o', 'type=tar,dest=out.tar', 'ctx']);
    expect(r.code).toBe(0);
    const lines = r.stderr.trimEnd().split('\n').map((l) => JSON.parse(l) as { vertexes?: { name: string }[] });
    expect(lines).toHaveLength(4);
    expect(lines[0]?.vertexes?.[0]?.name).toBe('[internal] load build definition from Dockerfile');
    expect(readFileSync(join(dir, 'out.tar'), 'utf8')).toBe('tar archive');
  });

  it('a failed build prints ERROR with the Dockerfile line and exits 1', async () => {
    daemon = await startFakeDaemon(
      buildingDaemon({}, {
        solve: async () => {
          throw new SourceError('failed to copy "missing": not found', 'Dockerfile', 3);
        },
      }),
    );
    const r = await run(['build', '--addr', daemon.address, '--progress=plain', 'ctx']);
    expect(r.code).toBe(1);
    expect(r.stderr.trimEnd().split('\n').at(-1)).toBe('ERROR: failed to copy "missing": not found (Dockerfile:3)');
  });

  it('canceling a running build ends the session and exits 1', async () => {
    const ac = new AbortController();
    let ended = false;
    daemon = await startFakeDaemon({
      async solve(_req, { session }) {
        ac.abort(new Error('interrupted'));
        await session.clientEnded;
        ended = true;
        return {};
      },
    });
    const r = await run(['build', '--addr', daemon.address, '-o', 'out', 'ctx'], {}, ac.signal);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/ERROR: .*(cancel|interrupt|abort)/i);
    await vi.waitFor(() => expect(ended).toBe(true));
  });

  it('sends Status, Attach and Solve to an explicit daemon without waiting for its Info answer (one round trip fewer)', async () => {
    const order: string[] = [];
    let solved!: () => void;
    const solveSeen = new Promise<void>((resolve) => (solved = resolve));
    daemon = await startFakeDaemon({
      // Info answers only once Solve has arrived: a CLI that waited for Info first would time out (3 s) and fail.
      beforeInfo: async () => {
        await Promise.race([solveSeen, new Promise((resolve) => setTimeout(resolve, 5000))]);
        order.push('info answered');
      },
      async solve() {
        order.push('solve');
        solved();
        return { 'containerimage.digest': 'sha256:abc' };
      },
    });
    const r = await run(['build', '--addr', daemon.address, '--progress=quiet', 'ctx']);
    expect(r.stderr).not.toContain('ERROR');
    expect(r.code).toBe(0);
    expect(order).toEqual(['solve', 'info answered']);
  });

  it('a daemon that never answers Info fails the build after the probe timeout, as before', async () => {
    daemon = await startFakeDaemon({
      beforeInfo: (signal) => new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true })),
      solve: (_req, { session }) => session.clientEnded.then(() => ({})),
    });
    const r = await run(['build', '--addr', daemon.address, '--progress=quiet', 'ctx']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`ERROR: failed to connect to kiln daemon at ${daemon.address}`);
  }, 15_000);

  it('an unreachable explicit daemon exits 1 naming the address', async () => {
    const addr = `unix://${dir}/none.sock`;
    const r = await run(['build', '--addr', addr, 'ctx']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`ERROR: failed to connect to kiln daemon at ${addr}`);
    const viaEnv = await run(['build', 'ctx'], { KILN_ADDR: 'tcp://127.0.0.1:1' });
    expect(viaEnv.code).toBe(1);
    expect(viaEnv.stderr).toContain('ERROR: failed to connect to kiln daemon at tcp://127.0.0.1:1');
  });

  it.each([
    [['build', '--nope', 'ctx'], 'ERROR: unknown flag: --nope'],
    [['build', '-t'], "ERROR: flag needs an argument: 't' in -t"],
    [['build'], 'ERROR: "kiln build" requires exactly 1 argument'],
    [['build', 'missing-dir'], 'ERROR: unable to prepare context: path "missing-dir" not found'],
    [['build', '-f', 'nope', 'ctx'], 'ERROR: --file: Dockerfile "nope" not found'],
    [['build', '-o', 'type=local', 'ctx'], 'ERROR: invalid value "type=local" for --output: dest is required'],
    [['build', '--addr', 'bogus', 'ctx'], 'ERROR: invalid argument "bogus" for "--addr" flag'],
    [['build', 'ctx'], 'ERROR: invalid KILN_ADDR "bogus"', { KILN_ADDR: 'bogus' }],
    [['frobnicate'], 'ERROR: unknown command "frobnicate"'],
    [['prune', '--keep-storage', 'lots'], 'ERROR: invalid argument "lots" for "--keep-storage" flag'],
    [['workers', 'extra'], 'ERROR: "kiln workers" accepts no arguments'],
    [['prune', '--keep-duration', 'soon'], 'ERROR: invalid argument "soon" for "--keep-duration" flag'],
    [['history', 'frob'], 'ERROR: unknown command "frob" for "kiln history"'],
    [['history', 'rm'], 'ERROR: "kiln history rm" requires at least 1 argument'],
    [['history', 'ls', '--format', 'xml'], 'ERROR: invalid argument "xml" for "--format" flag'],
    [['history', 'inspect', 'a', 'b'], 'ERROR: "kiln history inspect" accepts at most 1 argument'],
    [['history', 'logs', '--progress', 'tty'], 'ERROR: invalid argument "tty" for "--progress" flag'],
  ] as [string[], string, Record<string, string>?][])('usage error %j exits 2', async (argv, message, vars) => {
    const r = await run(argv, vars);
    expect(r.stderr).toContain(message);
    expect(r.stderr.startsWith('ERROR: ')).toBe(true);
    expect(r.code).toBe(2);
  });

  it('--help prints usage and exits 0', async () => {
    for (const argv of [['--help'], ['build', '--help'], ['build', '-h'], ['du', '--help'], ['prune', '-h'], ['workers', '--help'], ['history', '--help'], ['history', 'ls', '-h'], ['history', 'inspect', '--help'], ['history', 'logs', '-h'], ['history', 'rm', '-h']]) {
      const r = await run(argv);
      expect(r.code).toBe(0);
      expect(r.stdout.toString()).toMatch(/^Usage:  kiln/);
    }
    const none = await run([]);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/^Usage:  kiln COMMAND/);
  });

  it('bin/kiln answers --help and --version without the CLI bundle, with the same text as main', async () => {
    const bin = join(import.meta.dirname, '..', '..', '..', 'bin', 'kiln.mjs');
    for (const argv of [['--help'], ['-h'], ['help'], ['--version'], ['-v']]) {
      const out = execFileSync(process.execPath, [bin, ...argv], { encoding: 'utf8' });
      expect(out).toBe((await run(argv)).stdout.toString());
    }
    // The fast path loads only the usage module: no bundle in the ESM loader's trace.
    const trace = spawnSync(process.execPath, [bin, '--version'], { env: { ...process.env, NODE_DEBUG: 'esm' }, encoding: 'utf8' });
    expect(trace.status).toBe(0);
    expect(trace.stderr).toContain('usage.js');
    expect(trace.stderr).not.toContain('kiln-cli.bundle');
  });
});

describe('admin commands', () => {
  const ts = (msAgo: number) => timestampFromMs(Date.now() - msAgo);

  it('kiln workers prints a table', async () => {
    daemon = await startFakeDaemon({
      workers: [
        { id: 'w1', platforms: [{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm', variant: 'v7' }], labels: { 'kiln.executor': 'runc', a: 'b' }, ops: ['exec', 'file', 'source:docker-image', 'source:local'] },
        { id: 'worker-two', platforms: [{ os: 'linux', architecture: 'arm64' }] },
      ],
    });
    const r = await run(['workers', '--addr', daemon.address]);
    expect(r.code).toBe(0);
    expect(r.stdout.toString()).toBe(
      [
        'ID          PLATFORMS                 EXECUTOR  LABELS                  OPS',
        'w1          linux/amd64,linux/arm/v7  runc      a=b,kiln.executor=runc  exec,file,source:{docker-image,local}',
        'worker-two  linux/arm64                                                 ?',
        '',
      ].join('\n'),
    );
  });

  it('kiln workers --verbose shows each worker with its GC policy', async () => {
    daemon = await startFakeDaemon({
      workers: [{ id: 'w1', platforms: [{ os: 'linux', architecture: 'amd64' }], labels: { a: 'b' }, ops: ['exec', 'source:git'], gcPolicy: [{ keepDurationSeconds: 172_800n, keepBytes: 10_000_000_000n }] }],
    });
    const r = await run(['workers', '-v', '--addr', daemon.address]);
    expect(r.code).toBe(0);
    expect(r.stdout.toString()).toBe(
      ['Name:       w1', 'Platforms:  linux/amd64', 'Ops:        exec, source:git', 'Labels:', '  a:  b', 'GC Policy rule#0:', '  All:            false', '  Keep Duration:  48h0m0s', '  Keep Bytes:     10.00GB', ''].join('\n'),
    );
  });

  const usage = [
    { id: 'small', size: 1234n, inUse: false, lastUsedAt: ts(3 * 3600_000) },
    { id: 'big', size: 5_000_000n, inUse: true, mutable: true },
    { id: 'shared', size: 2000n, shared: true, lastUsedAt: ts(2 * 86400_000) },
  ];

  it('kiln du prints records and totals', async () => {
    daemon = await startFakeDaemon({ usage });
    const r = await run(['du', '--addr', daemon.address]);
    expect(r.code).toBe(0);
    expect(r.stdout.toString()).toBe(
      [
        'ID      RECLAIMABLE  SIZE    LAST ACCESSED',
        'big*    false        5.00MB  now',
        'shared  true         2.00kB  2 days ago',
        'small   true         1.23kB  3 hours ago',
        'Shared:       2.00kB',
        'Private:      5.00MB',
        'Reclaimable:  3.23kB',
        'Total:        5.00MB',
        '',
      ].join('\n'),
    );
    const verbose = await run(['du', '-v', '--addr', daemon.address]);
    expect(verbose.stdout.toString()).toContain('ID:           big\n');
  });

  it('kiln prune [--all] streams freed records and the total', async () => {
    daemon = await startFakeDaemon({ usage });
    const r = await run(['prune', '-f', '--all', '--reserved-space', '1MB', '--addr', daemon.address]);
    expect(r.code).toBe(0);
    const lines = r.stdout.toString().split('\n');
    expect(lines[0]).toMatch(/^ID\s+RECLAIMABLE\s+SIZE\s+LAST ACCESSED$/);
    expect(lines.slice(1, 4).map((l) => l.split(/\s+/)[0])).toEqual(['small', 'big*', 'shared']);
    expect(lines[4]).toBe('Total:\t5.00MB');
    expect(daemon.pruneRequests[0]).toMatchObject({ all: true, keepBytes: 1_048_576n });
    const none = await startFakeDaemon();
    try {
      const r2 = await run(['prune', '-f', '--addr', none.address]);
      expect(r2.stdout.toString()).toBe('Total:\t0B\n');
    } finally {
      await none.close();
    }
  });

  it('kiln prune asks as buildx does ([y/N] on stdout, a line from stdin) unless -f; only y prunes; a stdin closed without a byte (scripts, the shared bench) goes on', async () => {
    daemon = await startFakeDaemon({ usage });
    for (const [answer, pruned] of [['n\n', 0], ['\n', 0], ['', 1], ['y\n', 1]] as const) {
      const stdin = new PassThrough();
      const stdout = new PassThrough();
      const out: Buffer[] = [];
      stdout.on('data', (b: Buffer) => out.push(b));
      const before = daemon.pruneRequests.length;
      const running = main(['prune', '--max-used-space', '2GB', '--min-free-space', '512m', '--addr', daemon.address], {
        daemonCommand: [],
        cwd: dir,
        vars: { PATH: process.env.PATH },
        stdin,
        stdout,
        stderr: { write: () => true } as never,
        signal: new AbortController().signal,
      });
      stdin.end(answer);
      expect(await running).toBe(0);
      expect(Buffer.concat(out).toString()).toMatch(/^WARNING! This will remove all dangling build cache\. Are you sure you want to continue\? \[y\/N\] /);
      expect(daemon.pruneRequests.length - before).toBe(pruned);
    }
    expect(daemon.pruneRequests.at(-1)).toMatchObject({ maxUsedSpace: 2n * 1024n ** 3n, minFreeSpace: 512n * 1024n ** 2n });
  });

  it('kiln du --format json|pretty|TEMPLATE as buildx; --format with --verbose is refused', async () => {
    daemon = await startFakeDaemon({ usage });
    const du = await run(['du', '--format', 'json', '--addr', daemon.address]);
    expect(du.code, du.stderr).toBe(0);
    const json = du.stdout.toString().trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(json[0]).toMatchObject({ ID: 'big', Mutable: true, Reclaimable: false, Size: '5.00MB' });
    expect(Object.keys(json[0]!)).toEqual(['CreatedAt', 'Description', 'ID', 'LastUsedAt', 'Mutable', 'Parents', 'Reclaimable', 'Shared', 'Size', 'Type', 'UsageCount']);
    const tmpl = await run(['du', '--format', 'table {{.ID}}\t{{.Size}}', '--addr', daemon.address]);
    expect(tmpl.stdout.toString()).toBe('ID      SIZE\nbig*    5.00MB\nshared  2.00kB*\nsmall   1.23kB\n');
    const pretty = await run(['du', '--format=pretty', '--addr', daemon.address]);
    expect(pretty.stdout.toString()).toContain('ID:           big\nCreated at:   ');
    const both = await run(['du', '--format', 'json', '--verbose', '--addr', daemon.address]);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain('--format and --verbose cannot be used together');
  });

  it('kiln du against an unreachable daemon exits 1', async () => {
    const r = await run(['du', '--addr', `unix://${dir}/x.sock`]);
    expect(r.code).toBe(1);
    expect(existsSync(join(dir, 'root'))).toBe(false);
  });
});
