import { createHash } from 'node:crypto';
import { chmodSync, chownSync, linkSync, lutimesSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { copyPath, type CopyOptions } from './copy.js';
import { FileCopyPool } from './copy-pool.js';

const base: CopyOptions = {
  followSymlink: false,
  dirCopyContents: true,
  createDestPath: true,
  allowWildcard: false,
  allowEmptyWildcard: false,
  alwaysReplaceExistingDestPaths: false,
  includePatterns: [],
  excludePatterns: [],
};

/** Every entry under `dir`: relative path -> what a layer would record of it. */
function describeTree(dir: string, ignoreMtimeOf: (rel: string) => boolean = () => false): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (abs: string, rel: string) => {
    for (const name of readdirSync(abs).sort()) {
      const a = path.join(abs, name);
      const r = rel ? `${rel}/${name}` : name;
      const st = lstatSync(a);
      const body = st.isFile() ? createHash('sha256').update(readFileSync(a)).digest('hex') : st.isSymbolicLink() ? readlinkSync(a) : '';
      const mtime = ignoreMtimeOf(r) ? '' : String(st.mtimeMs);
      out.set(r, [st.mode.toString(8), st.uid, st.gid, mtime, st.nlink, body].join(' '));
      if (st.isDirectory()) walk(a, r);
    }
  };
  walk(dir, '');
  return out;
}

describe('copyPath of many files (files past the first batch copy on the pool threads)', () => {
  let tmp: string;
  beforeEach(async () => {
    tmp = await mkdtemp(path.join(tmpdir(), 'kiln-copy-'));
  });
  afterEach(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  /** 6 directories of 60 files (sizes around the 64 KiB buffer, modes, owners, times), a hardlink pair, a symlink, a big file. */
  function makeSource(): string {
    const src = path.join(tmp, 'src');
    const sizes = [0, 1, 1000, 65535, 65536, 65537, 200_000];
    for (let d = 0; d < 6; d++) {
      const dir = path.join(src, `d${d}`);
      mkdirSync(dir, { recursive: true });
      for (let f = 0; f < 60; f++) {
        const p = path.join(dir, `f${f}`);
        const size = sizes[(d * 60 + f) % sizes.length]!;
        writeFileSync(p, Buffer.alloc(size, `${d}-${f}|`));
        // Owners other than the creator's on some (the pool learns what a create gives and sets the rest).
        if (f % 7 === 0) chownSync(p, 1000 + f, 2000 + d);
        chmodSync(p, f % 5 === 0 ? 0o4755 : f % 3 === 0 ? 0o600 : 0o644);
        utimesSync(p, 1_600_000_000 + f, 1_600_000_000 + d * 100 + f);
      }
      utimesSync(dir, 1_500_000_000, 1_500_000_000 + d);
    }
    linkSync(path.join(src, 'd5/f1'), path.join(src, 'd5/hard'));
    symlinkSync('../d0/f1', path.join(src, 'd5/link'));
    lutimesSync(path.join(src, 'd5/link'), 1_600_000_000, 1_600_000_600);
    writeFileSync(path.join(src, 'd5/big'), Buffer.alloc(300 * 1024, 'b'));
    utimesSync(path.join(src, 'd5/big'), 1_600_000_000, 1_600_000_500);
    utimesSync(path.join(src, 'd5'), 1_500_000_000, 1_500_000_009);
    return src;
  }

  it('gives the same tree as the source: contents, modes, owners, file and directory mtimes, hardlinks, symlinks', async () => {
    const src = makeSource();
    const dest = path.join(tmp, 'dest');
    mkdirSync(dest);
    await copyPath(src, '/', dest, '/out/', base);
    const want = describeTree(src);
    const got = describeTree(path.join(dest, 'out'));
    expect([...got.keys()]).toEqual([...want.keys()]);
    for (const [rel, d] of want) expect(got.get(rel), rel).toBe(d);
  });

  it('applies chown, chmod and a fixed mtime to every file, pooled or not', async () => {
    const src = makeSource();
    const dest = path.join(tmp, 'dest');
    mkdirSync(dest);
    await copyPath(src, '/', dest, '/out/', { ...base, chown: { uid: 1234, gid: 5678 }, mode: 0o640, mtimeMs: 1_234_567_000 });
    for (const [rel] of describeTree(src)) {
      const st = lstatSync(path.join(dest, 'out', rel));
      expect([st.uid, st.gid], rel).toEqual([1234, 5678]);
      if (!st.isSymbolicLink()) expect(st.mode & 0o7777, rel).toBe(0o640);
      expect(st.mtimeMs, rel).toBe(1_234_567_000);
    }
  });

  it('replaces a symlink planted where a pooled file goes, without writing through it', async () => {
    const src = makeSource();
    const dest = path.join(tmp, 'dest');
    const outside = path.join(tmp, 'outside');
    writeFileSync(outside, 'host file');
    // The destination tree exists (not a fresh directory), so every target is looked at first.
    mkdirSync(path.join(dest, 'out/d5'), { recursive: true });
    symlinkSync(outside, path.join(dest, 'out/d5/f59'));
    await copyPath(src, '/', dest, '/out/', base);
    expect(readFileSync(outside, 'utf8')).toBe('host file');
    const st = lstatSync(path.join(dest, 'out/d5/f59'));
    expect(st.isFile()).toBe(true);
    expect(readFileSync(path.join(dest, 'out/d5/f59'))).toEqual(readFileSync(path.join(src, 'd5/f59')));
    // An existing directory keeps its own times; the ones the copy made take the source's.
    const want = describeTree(src, (rel) => rel === 'd5');
    const got = describeTree(path.join(dest, 'out'), (rel) => rel === 'd5');
    for (const [rel, d] of want) expect(got.get(rel), rel).toBe(d);
  });

  it('fails with the errno of a file the pool could not copy, and leaves no thread writing', async () => {
    const pool = new FileCopyPool(2);
    try {
      const target = path.join(tmp, 'x');
      const err = (await pool.run([{ src: path.join(tmp, 'missing'), target, size: 1, mode: 0o644, uid: 0, gid: 0 }]).catch((e: unknown) => e)) as NodeJS.ErrnoException;
      expect(err.code).toBe('ENOENT');
      expect(err.syscall).toBe('open');
      writeFileSync(path.join(tmp, 'ok'), 'ok');
      writeFileSync(target, 'there');
      const exists = (await pool.run([{ src: path.join(tmp, 'ok'), target, size: 2, mode: 0o644, uid: 0, gid: 0 }]).catch((e: unknown) => e)) as NodeJS.ErrnoException;
      expect(exists.code).toBe('EEXIST');
      expect(readFileSync(target, 'utf8')).toBe('there');
    } finally {
      await pool.close();
    }
  });
});
