import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { kilnBin, runKiln, startContainerd, startKilnd, type Kilnd, type TestContainerd } from '@kiln/testkit';

/** The pid of the daemon serving `root` (its command line names the root). */
function daemonPid(root: string): number {
  for (const entry of readdirSync('/proc').filter((e) => /^\d+$/.test(e))) {
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv.includes('daemon') && argv.includes(root)) return Number(entry);
    } catch {
      // gone
    }
  }
  throw new Error(`no daemon for ${root}`);
}

const runcList = (state: string) => (existsSync(state) ? execFileSync('runc', ['--root', state, 'list', '-q']).toString().split('\n').filter(Boolean) : []);
const mountsUnder = (root: string) => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').filter((p) => p.startsWith(`${root}/`));
const listDir = (dir: string) => (existsSync(dir) ? readdirSync(dir) : []);
const sql = (db: string, query: string) => execFileSync('sqlite3', ['-readonly', db, query]).toString().split('\n').filter(Boolean);

/**
 * What a stopped daemon left under the worker's root that nothing needs:
 * containers, bundles, run files, mounts, active snapshots, committed
 * snapshots that no persisted retention, image layer label or kept child
 * holds, and snapshot dirs without a row.
 */
function leftovers(workerRoot: string): string[] {
  const out = runcList(join(workerRoot, 'runc', 'state')).map((c) => `container ${c}`);
  for (const d of ['runc/bundles', 'exec/run', 'exec/secrets']) out.push(...listDir(join(workerRoot, d)).map((n) => `temp ${d}/${n}`));
  out.push(...mountsUnder(workerRoot).map((m) => `mount ${m}`));
  const meta = join(workerRoot, 'overlay', 'metadata.db');
  const retained = new Set(sql(join(workerRoot, 'retained-refs.db'), 'SELECT snapshot_id FROM retained_refs'));
  const rows = sql(meta, "SELECT seq || ' ' || id || ' ' || kind || ' ' || IFNULL(label, '-') || ' ' || IFNULL(parent_seq, '-') FROM snapshots").map((r) => {
    const [seq, id, kind, label, parent] = r.split(' ');
    return { seq: seq!, id: id!, kind: kind!, label: label!, parent: parent! };
  });
  // Kept: labeled layers, retained snapshots, and (transitively) the parents they sit on.
  const kept = new Set(rows.filter((r) => r.kind === 'committed' && (r.label !== '-' || retained.has(r.id))).map((r) => r.seq));
  for (let grew = true; grew; ) {
    grew = false;
    for (const r of rows) if (kept.has(r.seq) && r.parent !== '-' && !kept.has(r.parent)) grew = !!kept.add(r.parent);
  }
  out.push(...rows.filter((r) => !kept.has(r.seq)).map((r) => `snapshot ${r.kind} ${r.id}`));
  const seqs = new Set(rows.map((r) => r.seq));
  out.push(...listDir(join(workerRoot, 'overlay', 'snapshots')).filter((d) => !seqs.has(d)).map((d) => `snapshot dir ${d}`));
  out.push(...listDir(join(workerRoot, 'overlay', 'mounts')).map((d) => `mount dir ${d}`));
  return out;
}

describe('kill -9 of the daemon mid-RUN [topology=all-in-one, worker=oci]', () => {
  it('leaves no mount, container, temp dir or unreferenced snapshot once the daemon restarts on the same root', async () => {
    const root = mkdtempSync(join(tmpdir(), 'kiln-crash-'));
    const ctx = mkdtempSync(join(tmpdir(), 'kiln-crash-ctx-'));
    copyFileSync('/bin/busybox', join(ctx, 'busybox'));
    // Two RUN steps in parallel (stages a and b), killed while both run.
    writeFileSync(
      join(ctx, 'Dockerfile'),
      [
        'FROM scratch AS base',
        'COPY --chmod=0755 busybox /bin/busybox',
        'FROM base AS a',
        'RUN ["/bin/busybox", "sh", "-c", "echo a > /a; exec /bin/busybox sleep 30"]',
        'FROM base AS b',
        'RUN ["/bin/busybox", "sh", "-c", "echo b > /b; exec /bin/busybox sleep 30"]',
        'FROM scratch',
        'COPY --from=a /a /a',
        'COPY --from=b /b /b',
        '',
      ].join('\n'),
    );
    const workerRoot = join(root, 'worker-oci');
    const state = join(workerRoot, 'runc', 'state');
    let daemon = await startKilnd({ worker: 'oci', root });
    try {
      const client = spawn(kilnBin(), ['build', '--addr', daemon.addr, '--progress=plain', ctx], { stdio: 'ignore' });
      for (let i = 0; i < 300 && runcList(state).length < 2; i++) await new Promise((r) => setTimeout(r, 100));
      expect(runcList(state)).toHaveLength(2);
      expect(mountsUnder(workerRoot).length).toBeGreaterThanOrEqual(2);
      const pid = daemonPid(root);
      process.kill(pid, 'SIGKILL');
      client.kill('SIGKILL');
      for (let i = 0; i < 100 && existsSync(`/proc/${pid}`); i++) await new Promise((r) => setTimeout(r, 50));
      // The killed daemon's socket file stays behind: remove it so the restart is waited for.
      rmSync(join(root, 'kiln.sock'), { force: true });

      // A restart reaps at start: stopping it again at once leaves nothing behind.
      daemon = await startKilnd({ worker: 'oci', root });
      await daemon.stop();
      expect(leftovers(workerRoot)).toEqual([]);
      expect(mountsUnder(root)).toEqual([]);

      // And the next daemon on that root builds as usual (the COPY step from its cache).
      daemon = await startKilnd({ worker: 'oci', root });
      writeFileSync(join(ctx, 'Dockerfile'), 'FROM scratch\nCOPY --chmod=0755 busybox /bin/busybox\nRUN ["/bin/busybox", "true"]\n');
      const res = await runKiln(['build', '--addr', daemon.addr, '--progress=plain', ctx]);
      expect(res.code, `${res.stderr}\n${daemon.logs().slice(-3000)}`).toBe(0);
      await daemon.stop();
      expect(leftovers(workerRoot)).toEqual([]);
      expect(mountsUnder(root)).toEqual([]);
    } finally {
      await daemon.stop();
      // After a failed expectation mounts may remain: detach them so the root can go
      // and the expectation's own message is what the run reports (not EBUSY).
      for (const m of mountsUnder(root).reverse()) spawnSync('umount', ['-l', m]);
      rmSync(root, { recursive: true, force: true });
      rmSync(ctx, { recursive: true, force: true });
    }
  }, 120_000);
});

describe('kill -9 of the daemon mid-RUN [topology=all-in-one, worker=containerd]', () => {
  /** What containerd holds in Kiln's namespace (by `ctr`, containerd's own CLI): `<kind> <id>`, snapshots as `snapshots <kind> <key>`. */
  const inContainerd = (address: string) => {
    const ctr = (...args: string[]) => execFileSync('ctr', ['--address', address, '-n', 'kiln', ...args]).toString().split('\n').filter(Boolean);
    const snapshots = ctr('snapshots', 'ls')
      .slice(1)
      .map((l) => l.trim().split(/\s+/))
      .map((cols) => `snapshots ${cols.at(-1)!.toLowerCase()} ${cols[0]}`);
    return [...['containers', 'tasks', 'leases'].flatMap((kind) => ctr(kind, 'ls', '-q').map((id) => `${kind} ${id}`)), ...snapshots];
  };
  /** The lease of a committed snapshot `kiln/<owner hash>/<id>` is `kiln-<owner hash>-<id>`. */
  const leaseOf = (snapshot: string) => snapshot.replace(/^snapshots committed kiln\/([0-9a-f]+)\//, 'leases kiln-$1-');

  it('leaves no task, container, active snapshot, view or lease of the killed run in containerd once the daemon restarts on the same root', async () => {
    const root = mkdtempSync(join(tmpdir(), 'kiln-crash-ctrd-'));
    const ctx = mkdtempSync(join(tmpdir(), 'kiln-crash-ctrd-ctx-'));
    copyFileSync('/bin/busybox', join(ctx, 'busybox'));
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM scratch\nCOPY --chmod=0755 busybox /bin/busybox\nRUN ["/bin/busybox", "sleep", "30"]\n');
    // Started inside the try: a containerd or daemon that fails to start (or a start that throws after it) is still stopped.
    let containerd: TestContainerd | undefined;
    let daemon: Kilnd | undefined;
    try {
      containerd = await startContainerd();
      daemon = await startKilnd({ worker: 'containerd', root, containerd });
      const { address } = containerd;
      const client = spawn(kilnBin(), ['build', '--addr', daemon.addr, '--progress=plain', ctx], { stdio: 'ignore' });
      for (let i = 0; i < 300 && !inContainerd(address).some((x) => x.startsWith('tasks ')); i++) await new Promise((r) => setTimeout(r, 100));
      const during = inContainerd(address);
      const kinds = (xs: string[]) => [...new Set(xs.map((x) => x.split(' ').slice(0, x.startsWith('snapshots') ? 2 : 1).join(' ')))].sort();
      // The RUN's container and task (and the shared shim's holder), its rootfs as an active snapshot, the worker's lease of this start, COPY's committed result.
      expect(kinds(during)).toEqual(expect.arrayContaining(['containers', 'leases', 'snapshots active', 'snapshots committed', 'tasks']));
      const pid = daemonPid(root);
      process.kill(pid, 'SIGKILL');
      client.kill('SIGKILL');
      for (let i = 0; i < 100 && existsSync(`/proc/${pid}`); i++) await new Promise((r) => setTimeout(r, 50));
      rmSync(join(root, 'kiln.sock'), { force: true });
      // The task outlives the daemon (its shim keeps it) until the restart reaps it.
      expect(inContainerd(address)).toEqual(expect.arrayContaining(during));

      // What belongs to the killed run: everything but committed snapshots (step results the solver may keep) and their leases.
      const committed = during.filter((x) => x.startsWith('snapshots committed '));
      const ofTheRun = during.filter((x) => !committed.includes(x) && !committed.map(leaseOf).includes(x));
      expect(ofTheRun.length).toBeGreaterThanOrEqual(5);

      // The restart reaps at start (a loaded host may take seconds to kill and delete the task).
      daemon = await startKilnd({ worker: 'containerd', root, containerd });
      const settled = () => {
        const now = inContainerd(address);
        return !now.some((x) => ofTheRun.includes(x) || /^(containers|tasks|snapshots active|snapshots view) /.test(x));
      };
      for (let i = 0; i < 300 && !settled(); i++) await new Promise((r) => setTimeout(r, 100));
      const after = inContainerd(address);
      expect(after.filter((x) => ofTheRun.includes(x) || !/^(leases|snapshots committed) /.test(x)), daemon.logs().slice(-3000)).toEqual([]);
      // Every lease left holds a committed snapshot still there, or is the new start's own.
      const kept = after.filter((x) => x.startsWith('snapshots committed '));
      expect(after.filter((x) => x.startsWith('leases ') && !kept.map(leaseOf).includes(x) && !/-boot-/.test(x))).toEqual([]);
      await daemon.stop();
    } finally {
      await daemon?.stop();
      await containerd?.stop();
      for (const m of mountsUnder(root).reverse()) spawnSync('umount', ['-l', m]);
      rmSync(root, { recursive: true, force: true });
      rmSync(ctx, { recursive: true, force: true });
    }
  }, 120_000);
});

describe('kill -9 of the daemon between a commit and its sync [topology=all-in-one, worker=oci]', () => {
  // Snapshots are committed from volatile overlays and synced in batches afterwards; a daemon
  // killed in between leaves rows `pending` (sync_state 0) with the boot they were written in.
  // After a reboot such a tree may be torn: the next start must not serve it as a cache hit, and
  // must start. In the same boot the files are intact (only the process died) and stay cached.
  it('runs the step again when its snapshot was pending in an earlier boot, keeps it cached in the same boot', async () => {
    const root = mkdtempSync(join(tmpdir(), 'kiln-crash-sync-'));
    const ctx = mkdtempSync(join(tmpdir(), 'kiln-crash-sync-ctx-'));
    copyFileSync('/bin/busybox', join(ctx, 'busybox'));
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM scratch\nCOPY --chmod=0755 busybox /bin/busybox\nRUN ["/bin/busybox", "sh", "-c", "echo ran > /ran"]\n');
    const workerRoot = join(root, 'worker-oci');
    const meta = join(workerRoot, 'overlay', 'metadata.db');
    const bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    const build = async (d: Kilnd) => {
      const res = await runKiln(['build', '--addr', d.addr, '--progress=plain', ctx]);
      expect(res.code, `${res.stderr}\n${d.logs().slice(-3000)}`).toBe(0);
      return { runCached: /\] RUN \[[^\n]*\n#\d+ CACHED/.test(res.stderr), copyCached: /\] COPY [^\n]*\n#\d+ CACHED/.test(res.stderr) };
    };
    /** SIGKILLs the daemon, then marks its newest committed snapshot (the RUN's) as a crash before its sync in boot `boot` left it. */
    const killBeforeSync = async (boot: string) => {
      const pid = daemonPid(root);
      process.kill(pid, 'SIGKILL');
      for (let i = 0; i < 100 && existsSync(`/proc/${pid}`); i++) await new Promise((r) => setTimeout(r, 50));
      rmSync(join(root, 'kiln.sock'), { force: true });
      const [top] = sql(meta, "SELECT id FROM snapshots WHERE kind = 'committed' ORDER BY seq DESC LIMIT 1");
      expect(sql(join(workerRoot, 'retained-refs.db'), 'SELECT snapshot_id FROM retained_refs')).toContain(top);
      execFileSync('sqlite3', [meta, `UPDATE snapshots SET sync_state = 0, boot_id = '${boot}' WHERE id = '${top}'`]);
      return top!;
    };
    let daemon = await startKilnd({ worker: 'oci', root });
    try {
      expect(await build(daemon)).toEqual({ runCached: false, copyCached: false });

      const torn = await killBeforeSync('an-earlier-boot');
      daemon = await startKilnd({ worker: 'oci', root });
      expect(await build(daemon)).toEqual({ runCached: false, copyCached: true });

      const intact = await killBeforeSync(bootId);
      daemon = await startKilnd({ worker: 'oci', root });
      expect(await build(daemon)).toEqual({ runCached: true, copyCached: true });
      await daemon.stop();
      expect(sql(meta, `SELECT sync_state FROM snapshots WHERE id = '${intact}'`)).toEqual(['1']);
      expect(sql(meta, 'SELECT DISTINCT sync_state FROM snapshots')).toEqual(['1']);
      expect(sql(meta, 'SELECT id FROM snapshots')).not.toContain(torn);
      expect(leftovers(workerRoot)).toEqual([]);
    } finally {
      await daemon.stop();
      for (const m of mountsUnder(root).reverse()) spawnSync('umount', ['-l', m]);
      rmSync(root, { recursive: true, force: true });
      rmSync(ctx, { recursive: true, force: true });
    }
  }, 120_000);
});
