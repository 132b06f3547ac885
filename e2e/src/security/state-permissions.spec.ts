import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runKiln, startKilnd, type Kilnd, e2eWorker } from '@kiln/testkit';

const NOBODY = 65534;

/** Runs `cmd` as an unprivileged user (uid/gid 65534, no supplementary groups). */
function asNobody(cmd: string[]): { code: number; stderr: string } {
  const r = spawnSync('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', ...cmd], { encoding: 'utf8' });
  return { code: r.status ?? -1, stderr: r.stderr ?? '' };
}

/*
 * Hole 6 of the security review: the daemon's state (blobs, solver.db,
 * snapshots, logs) was readable by every local user, its root 0755. Now the
 * root is 0700 (also one an older version left 0755), the socket 0660 with
 * `--group` choosing its group, and another user reads nothing.
 */
describe(`daemon state is root-only [topology=all-in-one, worker=${e2eWorker()}]`, () => {
  let work: string;
  let root: string;
  let daemon: Kilnd | undefined;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'kiln-state-perms-'));
    chmodSync(work, 0o755);
    root = join(work, 'root');
    // A root an older version made world-readable.
    mkdirSync(root, { mode: 0o755 });
    chmodSync(root, 0o755);
    daemon = await startKilnd({ root, args: ['--group', 'nogroup'] });
    const ctx = join(work, 'ctx');
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM scratch\nCOPY secret.txt /\n');
    writeFileSync(join(ctx, 'secret.txt'), 'tenant data\n');
    const res = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', '-t', 'perms:1', ctx]);
    expect(res.code, res.stderr).toBe(0);
  }, 120_000);

  afterAll(async () => {
    await daemon?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('makes the root 0700 and the socket 0660 in the --group group', () => {
    expect((statSync(root).mode & 0o777).toString(8)).toBe('700');
    const sock = statSync(join(root, 'kiln.sock'));
    expect((sock.mode & 0o777).toString(8)).toBe('660');
    expect(sock.gid).toBe(NOBODY);
  });

  it('lets another user read neither the cache database nor any blob', () => {
    const files = readdirSync(root, { recursive: true, withFileTypes: true }).filter((d) => d.isFile());
    expect(files.length).toBeGreaterThan(0);
    const db = files.find((d) => d.name === 'solver.db');
    expect(db, 'solver.db under the root').toBeDefined();
    const read = asNobody(['cat', join(db!.parentPath, db!.name)]);
    expect(read.code).not.toBe(0);
    expect(read.stderr).toMatch(/Permission denied/);
    expect(asNobody(['ls', root]).code).not.toBe(0);
    expect(asNobody(['find', root, '-type', 'f']).stderr).toMatch(/Permission denied/);
  });

  it('refuses an unknown --group naming the flag', async () => {
    const res = await runKiln(['daemon', '--root', join(work, 'other'), '--addr', `unix://${join(work, 'other.sock')}`, '--group', 'no-such-group-kiln']);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain('--group');
  });
});
