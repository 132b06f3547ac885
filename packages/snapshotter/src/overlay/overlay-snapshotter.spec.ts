import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mountsBelow, runSnapshotterContract } from '../testing/contract.js';
import type { Snapshotter } from '../snapshotter.js';
import { mountFs, unmountFs } from '@kiln/common';
import { createOverlaySnapshotter } from './overlay-snapshotter.js';

runSnapshotterContract('overlayfs', (root) => createOverlaySnapshotter({ root }));

/** The lowerdir option of the overlay mounted at `mp`, split. */
function lowersOf(mp: string): string[] {
  const line = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .find((l) => l.split(' ')[4] === mp);
  const opt = line?.split(' - ')[1]?.split(' ')[2]?.split(',').find((o) => o.startsWith('lowerdir='));
  return opt ? opt.slice('lowerdir='.length).split(':') : [];
}

describe('overlay snapshotter', () => {
  let root: string;
  let s: Snapshotter | undefined;
  beforeEach(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'kiln-ovl-'));
  });
  afterEach(async () => {
    await s?.close();
    s = undefined;
    expect(mountsBelow(root)).toEqual([]);
    await rm(root, { recursive: true, force: true });
  });

  it('mounts children over the parent chain and records deletions as overlay whiteouts', async () => {
    s = createOverlaySnapshotter({ root });
    const a = await s.prepare('a');
    expect(mountsBelow(root)).toEqual([]); // no parent: a plain dir
    await mkdir(path.join(a.path, 'd'));
    await writeFile(path.join(a.path, 'd/x'), 'x');
    await writeFile(path.join(a.path, 'gone'), 'g');
    const pa = await s.commit('a');
    const b = await s.prepare('b', pa);
    expect(mountsBelow(root)).toEqual([b.path]);
    await unlink(path.join(b.path, 'gone'));
    await writeFile(path.join(b.path, 'd/y'), 'y');
    const pb = await s.commit('b');
    expect(mountsBelow(root)).toEqual([]);

    const ch = await s.changes!(pb);
    expect(ch).toBeDefined();
    const wh = await lstat(path.join(ch!.path, 'gone'));
    expect(wh.isCharacterDevice() && wh.rdev === 0).toBe(true);
    expect((await readdir(path.join(ch!.path, 'd'))).sort()).toEqual(['y']);
    await ch!.release();

    const v = await s.view(pb);
    expect(mountsBelow(root)).toEqual([v.path]);
    await expect(writeFile(path.join(v.path, 'w'), 'w')).rejects.toMatchObject({ code: 'EROFS' });
    expect((await readdir(path.join(v.path, 'd'))).sort()).toEqual(['x', 'y']);
    const v2 = await s.view(pb);
    expect(v2.path).toBe(v.path); // one mount shared by views of one id
    await v.release();
    expect(await readFile(path.join(v2.path, 'd/x'), 'utf8')).toBe('x');
    await v2.release();
    expect(mountsBelow(root)).toEqual([]);
  });

  it('merges a 200-deep chain when its lower dirs would not fit one mount', async () => {
    s = createOverlaySnapshotter({ root });
    let parent: string | undefined;
    let maxLowers = 0;
    for (let i = 0; i < 200; i++) {
      const a = await s.prepare(`k${i}`, parent);
      if (parent !== undefined) maxLowers = Math.max(maxLowers, lowersOf(a.path).length);
      await writeFile(path.join(a.path, `f${i}`), String(i));
      if (i > 0) await unlink(path.join(a.path, `f${i - 1}`)); // a whiteout in every layer
      if (i === 50) await writeFile(path.join(a.path, 'kept'), 'from 50');
      parent = await s.commit(`k${i}`);
    }
    // Path lengths under tmpdir put the limit near 100 lower dirs: merges happened.
    expect(maxLowers).toBeGreaterThan(20);
    expect(maxLowers).toBeLessThan(199);
    const v = await s.view(parent!);
    expect((await readdir(v.path)).sort()).toEqual(['f199', 'kept']);
    expect(await readFile(path.join(v.path, 'kept'), 'utf8')).toBe('from 50');
    await v.release();
    const c = await s.prepare('top', parent);
    expect(await readFile(path.join(c.path, 'f199'), 'utf8')).toBe('199');
    await s.remove('top');
  }, 120_000);

  it('merges in several steps when even the chain alone does not fit one mount', async () => {
    // Built under the default limit, then reopened with a tiny one: viewing the top needs a staged merge.
    s = createOverlaySnapshotter({ root });
    let parent: string | undefined;
    for (let i = 0; i < 30; i++) {
      const a = await s.prepare(`k${i}`, parent);
      await writeFile(path.join(a.path, `f${i % 7}`), String(i));
      if (i === 10) await unlink(path.join(a.path, 'f0'));
      parent = await s.commit(`k${i}`);
    }
    await s.close();
    s = createOverlaySnapshotter({ root, maxMountOptionBytes: 400 });
    const v = await s.view(parent!);
    expect(mountsBelow(root)).toEqual([]); // the merged copy is read directly
    expect((await readdir(v.path)).sort()).toEqual(['f0', 'f1', 'f2', 'f3', 'f4', 'f5', 'f6']);
    expect(await readFile(path.join(v.path, 'f1'), 'utf8')).toBe('29');
    await v.release();
    const c = await s.prepare('child', parent);
    expect(lowersOf(c.path)).toHaveLength(1);
    expect(await readFile(path.join(c.path, 'f0'), 'utf8')).toBe('28');
    await s.remove('child');
  }, 60_000);

  it('leaves no mount behind after a canceled prepare or a failed commit', async () => {
    s = createOverlaySnapshotter({ root });
    const a = await s.prepare('a');
    const pa = await s.commit('a');
    await expect(s.prepare('b', pa, { signal: AbortSignal.abort() })).rejects.toMatchObject({ code: 'canceled' });
    await s.prepare('c', pa);
    await s.commit('c', { label: 'L' });
    await s.prepare('d', pa);
    await expect(s.commit('d', { label: 'L' })).rejects.toMatchObject({ code: 'already_exists' });
    await s.remove('d');
    expect(mountsBelow(root)).toEqual([]);
    expect((await s.list()).map((i) => i.kind)).toEqual(['committed', 'committed']);
  });

  it('refuses a second snapshotter on the same root', async () => {
    s = createOverlaySnapshotter({ root });
    await s.list();
    const other = createOverlaySnapshotter({ root });
    await expect(other.list()).rejects.toMatchObject({ code: 'unavailable' });
    await other.close();
  });

  it('reaps mounts, active snapshots and scratch dirs after kill -9', async () => {
    {
      const out = await runUntilKilled('crash-child.ts', root);
      const top = /committed (\w+)/.exec(out)![1]!;
      expect(mountsBelow(root).length).toBe(4); // three active snapshots and a view

      s = createOverlaySnapshotter({ root });
      const list = await s.list();
      expect(mountsBelow(root)).toEqual([]);
      expect(list.map((i) => i.kind)).toEqual(['committed', 'committed', 'committed', 'committed']);
      expect(await s.byLabel('chain:base')).toBe(list[0]!.name);
      expect(await readdir(path.join(root, 'tmp'))).toEqual([]);
      expect(await readdir(path.join(root, 'mounts'))).toEqual([]);
      expect((await readdir(path.join(root, 'snapshots'))).length).toBe(4);
      const v = await s.view(top);
      expect((await readdir(v.path)).sort()).toEqual(['f', 'f0', 'f1', 'f2']);
      await v.release();
      const again = await s.prepare('active0', top); // the key is free again
      expect(await readdir(again.path)).not.toContain('uncommitted');
    }
  });

  it('mounts active snapshots volatile; the kernel would refuse their work dir again, so none is reused', async () => {
    s = createOverlaySnapshotter({ root });
    const base = await s.prepare('base');
    await writeFile(path.join(base.path, 'f'), 'f');
    const pb = await s.commit('base');
    const a = await s.prepare('a', pb);
    expect(isVolatile(a.path)).toBe(true);
    await s.commit('a');
    const off = createOverlaySnapshotter({ root: await mkdtemp(path.join(tmpdir(), 'kiln-ovl-')), volatile: false });
    try {
      await off.commit(await off.prepare('x').then(() => 'x'));
      const b = await off.prepare('b', (await off.list())[0]!.name);
      expect(isVolatile(b.path)).toBe(false);
      await off.remove('b');
    } finally {
      await off.close();
    }
    // What the kernel does with a volatile upper/work pair mounted a second time.
    const d = await mkdtemp(path.join(tmpdir(), 'kiln-ovl-volatile-'));
    try {
      for (const n of ['lower', 'upper', 'work', 'mnt']) await mkdir(path.join(d, n));
      const opts = `lowerdir=${d}/lower,upperdir=${d}/upper,workdir=${d}/work,volatile`;
      await mountFs('overlay', 'overlay', path.join(d, 'mnt'), opts);
      await unmountFs(path.join(d, 'mnt'));
      // Left after a clean unmount too; overlayfs then says "overlay with incompat feature 'volatile' cannot be mounted".
      expect(await readdir(path.join(d, 'work', 'work', 'incompat'))).toEqual(['volatile']);
      await expect(mountFs('overlay', 'overlay', path.join(d, 'mnt'), opts)).rejects.toThrow(/Invalid argument/);
    } finally {
      await unmountFs(path.join(d, 'mnt')).catch(() => undefined);
      await rm(d, { recursive: true, force: true });
    }
  });

  it('syncs at open what a killed process committed but never synced, in the same boot', async () => {
    const out = await runUntilKilled('sync-child.ts', root);
    const [old, mid, top] = /ids (\w+) (\w+) (\w+)/.exec(out)!.slice(1);
    expect(syncStates(root)).toEqual([1, 0, 0]);
    s = createOverlaySnapshotter({ root });
    expect((await s.list()).map((i) => i.name)).toEqual([old, mid, top]);
    const v = await s.view(top!);
    expect((await readdir(v.path)).sort()).toEqual(['mid', 'old', 'top']);
    await v.release();
    await s.close();
    s = undefined;
    expect(syncStates(root)).toEqual([1, 1, 1]);
  });

  it('drops, with everything above them, snapshots of an earlier boot whose sync never ended', async () => {
    const out = await runUntilKilled('sync-child.ts', root);
    const [old, mid, top] = /ids (\w+) (\w+) (\w+)/.exec(out)!.slice(1);
    s = createOverlaySnapshotter({ root, bootId: 'a-later-boot' });
    expect((await s.list()).map((i) => i.name)).toEqual([old]);
    expect(await readdir(path.join(root, 'snapshots'))).toEqual(['1']);
    await expect(s.view(mid!)).rejects.toMatchObject({ code: 'not_found' });
    // The synced one serves a new child as before.
    const c = await s.prepare('c', old);
    expect(await readdir(c.path)).toEqual(['old']);
    await s.commit('c');
    await s.close();
    s = undefined;
    expect(syncStates(root)).toEqual([1, 1]);
  });

  it('syncs in the background after commits, batched', async () => {
    s = createOverlaySnapshotter({ root, syncDelayMs: 0 });
    const a = await s.prepare('a');
    await writeFile(path.join(a.path, 'f'), 'f');
    await s.commit('a');
    await s.prepare('b');
    await s.commit('b');
    await new Promise((r) => setTimeout(r, 50));
    await s.sync!(); // waits for the background one too
    await s.close();
    s = undefined;
    expect(syncStates(root)).toEqual([1, 1]);
  });
});

/** Bundles testing/fixtures/FIXTURE, runs it on `root` until it prints "ready", SIGKILLs it; returns its output. */
async function runUntilKilled(fixture: string, root: string): Promise<string> {
  const work = await mkdtemp(path.join(tmpdir(), 'kiln-ovl-crash-'));
  try {
    const bundle = path.join(work, 'child.mjs');
    await build({
      entryPoints: [fileURLToPath(new URL(`../testing/fixtures/${fixture}`, import.meta.url))],
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      outfile: bundle,
      conditions: ['@kiln/source'],
      external: ['better-sqlite3', 'koffi'],
      logLevel: 'warning',
      banner: { js: "import { createRequire as __kilnRequire } from 'node:module'; const require = __kilnRequire(import.meta.url);" },
    });
    const require = createRequire(import.meta.url);
    const nodePath = path.dirname(path.dirname(require.resolve('better-sqlite3/package.json')));
    const child = spawn(process.execPath, [bundle, root], { env: { ...process.env, NODE_PATH: nodePath }, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('ready\n')) resolve();
      });
      child.on('exit', (code) => reject(new Error(`crash child exited early (${code}): ${out}`)));
    });
    const exited = new Promise((r) => child.on('exit', r));
    child.kill('SIGKILL');
    await exited;
    return out;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** sync_state of every row of a closed snapshotter's metadata, by seq. */
function syncStates(root: string): number[] {
  const require = createRequire(import.meta.url);
  const Db = require('better-sqlite3') as new (f: string) => { prepare(q: string): { all(): { sync_state: number }[] }; close(): void };
  const db = new Db(path.join(root, 'metadata.db'));
  try {
    return db.prepare("SELECT sync_state FROM snapshots WHERE kind = 'committed' ORDER BY seq").all().map((r) => r.sync_state);
  } finally {
    db.close();
  }
}

/** Whether the overlay at `mp` is volatile (its super options: `volatile`, or `fsync=volatile` on kernels with the fsync= option). */
function isVolatile(mp: string): boolean {
  const line = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .find((l) => l.split(' ')[4] === mp);
  const opts = line?.split(' - ')[1]?.split(' ')[2]?.split(',') ?? [];
  return opts.includes('volatile') || opts.includes('fsync=volatile');
}
