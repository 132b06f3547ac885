import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { startFakeDaemon, type FakeDaemon } from './testing/fixtures/fake-daemon.js';

// bin/kiln over the built tree: `npm run build` made the bundle and its start-up
// snapshot (tools/cli-snapshot.mjs), stamped with the node binary that built it.
const repo = join(import.meta.dirname, '..', '..', '..');
const work = mkdtempSync(join(tmpdir(), 'kiln-cli-snapshot-'));
let daemon: FakeDaemon | undefined;
afterEach(async () => {
  await daemon?.close();
  daemon = undefined;
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  /** The command bin/kiln exec'd (from `sh -x`). */
  exec: string;
}

/** `sh -x bin/kiln ARGS` (or `node bin/kiln.mjs ARGS` with plain: the CLI without the launcher). Async: the fake daemon runs in this process. */
function kiln(args: string[], env: NodeJS.ProcessEnv = {}, plain = false): Promise<Run> {
  const base: NodeJS.ProcessEnv = { ...process.env, KILN_ROOT: join(work, 'root'), KILN_ADDR: '', HOME: work, ...env };
  if (!('NODE_OPTIONS' in env)) delete base.NODE_OPTIONS;
  const [cmd, argv] = plain ? [process.execPath, [join(repo, 'bin', 'kiln.mjs'), ...args]] : ['sh', ['-x', join(repo, 'bin', 'kiln'), ...args]];
  const child = spawn(cmd, argv, { env: base, cwd: work });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (b: Buffer) => (stdout += b));
  child.stderr.on('data', (b: Buffer) => (stderr += b));
  return new Promise((resolve) => {
    child.on('close', (code) => {
      const trace = stderr.split('\n').filter((l) => l.startsWith('+ '));
      resolve({ code, stdout, stderr: stderr.replace(/^\+ .*\n/gm, '').trim(), exec: trace.filter((l) => l.startsWith('+ exec ')).at(-1) ?? '' });
    });
  });
}

describe('bin/kiln and the CLI start-up snapshot', () => {
  it('runs the CLI from the snapshot when the node on PATH built it, with the output of the plain CLI', async () => {
    daemon = await startFakeDaemon({ workers: [{ id: 'w1', platforms: [{ os: 'linux', architecture: 'amd64' }] }] });
    const fromSnapshot = await kiln(['workers', '--addr', daemon.address]);
    expect(fromSnapshot.exec).toContain('--snapshot-blob');
    expect(fromSnapshot.exec).toMatch(/kiln-cli\.snapshot\.blob \S*bin\/kiln\.mjs workers --addr /);
    const plain = await kiln(['workers', '--addr', daemon.address], {}, true);
    expect(plain.code).toBe(0);
    expect(fromSnapshot).toMatchObject({ code: 0, stdout: plain.stdout, stderr: plain.stderr });
    expect(fromSnapshot.stdout).toMatch(/^ID +PLATFORMS/);
  });

  it('builds from the snapshot (warmed by a build of its own, snapshot-warmup.ts) as the plain CLI does', async () => {
    const ctx = mkdtempSync(join(work, 'ctx-'));
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM scratch\nCOPY a.txt /\n');
    writeFileSync(join(ctx, 'a.txt'), 'a\n');
    const seen: string[] = [];
    daemon = await startFakeDaemon({
      async solve(req, { session, emit }) {
        seen.push(Buffer.from((await session.read('dockerfile', 'Dockerfile')).data).toString());
        emit({ vertexes: [{ digest: 'sha256:1', name: '[1/1] COPY a.txt /', cached: true }] });
        return { 'image.name': req.exporters[0]?.attrs.name ?? '', 'containerimage.config.digest': 'sha256:c0ffee' };
      },
    });
    const args = ['build', '--addr', daemon.address, '--progress=plain', '-q', '-t', 'app:1', ctx];
    const fromSnapshot = await kiln(args);
    expect(fromSnapshot.exec).toContain('--snapshot-blob');
    const plain = await kiln(args, {}, true);
    expect(fromSnapshot).toMatchObject({ code: 0, stdout: 'sha256:c0ffee\n' });
    expect(fromSnapshot).toMatchObject({ code: plain.code, stdout: plain.stdout, stderr: plain.stderr });
    expect(seen).toEqual(['FROM scratch\nCOPY a.txt /\n', 'FROM scratch\nCOPY a.txt /\n']);
    expect(daemon.solveRequests.map((r) => r.exporters[0]?.attrs.name)).toEqual(['app:1', 'app:1']);
  });

  it('keeps exit codes and errors: a usage error (2) and a daemon that is not there (1)', async () => {
    const usage = await kiln(['build', '--bogus']);
    expect(usage.exec).toContain('--snapshot-blob');
    expect(usage).toMatchObject({ code: 2, stderr: expect.stringContaining('ERROR: unknown flag: --bogus') });
    writeFileSync(join(work, 'Dockerfile'), 'FROM scratch\n');
    const addr = `unix://${join(work, 'none.sock')}`;
    const down = await kiln(['build', '--addr', addr, '-f', join(work, 'Dockerfile'), work]);
    expect(down.exec).toContain('--snapshot-blob');
    expect(down.code).toBe(1);
    expect(down.stderr).toContain(`ERROR: failed to connect to kiln daemon at ${addr}`);
  });

  it('is not used by another node binary, nor with NODE_OPTIONS (node would refuse the blob: exit 14)', async () => {
    // Another `node` first on PATH (here a wrapper: another file, another modification time).
    const otherNode = mkdtempSync(join(work, 'node-'));
    writeFileSync(join(otherNode, 'node'), `#!/bin/sh\nexec ${process.execPath} "$@"\n`);
    chmodSync(join(otherNode, 'node'), 0o755);
    const other = await kiln(['build', '--bogus'], { PATH: `${otherNode}:${process.env.PATH ?? ''}` });
    expect(other.exec).not.toContain('--snapshot-blob');
    expect(other).toMatchObject({ code: 2, stderr: expect.stringContaining('ERROR: unknown flag: --bogus') });

    const blob = join(repo, 'packages', 'cli', 'dist', 'kiln-cli.snapshot.blob');
    const refused = spawnSync(process.execPath, ['--snapshot-blob', blob, join(repo, 'bin', 'kiln.mjs'), 'build', '--bogus'], {
      env: { ...process.env, NODE_OPTIONS: '--max-old-space-size=300' },
      encoding: 'utf8',
    });
    expect(refused.status, refused.stderr).toBe(14);
    const flagged = await kiln(['build', '--bogus'], { NODE_OPTIONS: '--max-old-space-size=300' });
    expect(flagged.exec).not.toContain('--snapshot-blob');
    expect(flagged).toMatchObject({ code: 2, stderr: expect.stringContaining('ERROR: unknown flag: --bogus') });
  });

  it('leaves --version and --help to bin/kiln.mjs (they start faster without the snapshot)', async () => {
    const version = await kiln(['--version']);
    expect(version.exec).not.toContain('--snapshot-blob');
    expect(version).toMatchObject({ code: 0, stdout: expect.stringMatching(/^kiln v/) });
  });

  it('a stamp that lost its mtime (an nx cache restore) is mended by the next plain run on the node that built it, and no other', async () => {
    const loader = (await import(join(repo, 'bin', 'kiln-cli-loader.mjs'))) as {
      repairSnapshotStamp: (o: { stampPath: string }) => boolean;
      SNAPSHOT_STAMP_PATH: string;
    };
    const nodeNs = statSync(process.execPath, { bigint: true }).mtimeNs;
    const stamp = join(work, 'restored.node');
    copyFileSync(loader.SNAPSHOT_STAMP_PATH, stamp);
    utimesSync(stamp, new Date(), new Date());
    expect(loader.repairSnapshotStamp({ stampPath: stamp })).toBe(true);
    expect(statSync(stamp, { bigint: true }).mtimeNs).toBe(nodeNs);
    expect(loader.repairSnapshotStamp({ stampPath: stamp })).toBe(false); // already right

    const other = join(work, 'other.node');
    writeFileSync(other, readFileSync(stamp, 'utf8').replace(/"size":"\d+"/, '"size":"1"'));
    utimesSync(other, new Date(1_000_000), new Date(1_000_000));
    expect(loader.repairSnapshotStamp({ stampPath: other })).toBe(false);
    expect(statSync(other).mtimeMs).toBe(1_000_000);
  });
});
