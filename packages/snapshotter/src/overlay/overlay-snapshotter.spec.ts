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
    const work = await mkdtemp(path.join(tmpdir(), 'kiln-ovl-crash-'));
    try {
      const bundle = path.join(work, 'crash-child.mjs');
      await build({
        entryPoints: [fileURLToPath(new URL('../testing/fixtures/crash-child.ts', import.meta.url))],
        bundle: true,
        platform: 'node',
        format: 'esm',
        target: 'node20',
        outfile: bundle,
        conditions: ['@kiln/source'],
        external: ['better-sqlite3'],
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
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });
});
