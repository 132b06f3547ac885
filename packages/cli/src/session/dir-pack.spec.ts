import { mkdirSync, mkdtempSync, rmSync, symlinkSync, utimesSync, writeFileSync, chmodSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PatternMatcher, readTarEntries } from '@kiln/common';
import { CHUNK_BYTES, followLinks, literalPattern, packSelected, selectFiles } from './dir-pack.js';

let root: string;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'kiln-pack-'));
  const files: Record<string, string> = {
    'Dockerfile': 'FROM scratch\n',
    'src/a.ts': 'a',
    'src/b.test.ts': 'b',
    'src/deep/c.ts': 'c',
    'docs/README.md': 'readme',
    'docs/guide.md': 'guide',
    'node_modules/x/index.js': 'x',
    'node_modules/keep/index.js': 'keep',
    'empty/.gitkeep': '',
  };
  for (const [p, data] of Object.entries(files)) {
    mkdirSync(join(root, p, '..'), { recursive: true });
    writeFileSync(join(root, p), data);
  }
  mkdirSync(join(root, 'emptydir'));
  symlinkSync('src/a.ts', join(root, 'link-to-a'));
  symlinkSync('/etc/passwd', join(root, 'abs-link'));
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

async function select(include: string[], ...excludes: string[][]): Promise<string[]> {
  const out: string[] = [];
  const entries = selectFiles({ root, include: new PatternMatcher(include), exclude: excludes.map((e) => new PatternMatcher(e)) });
  for await (const e of entries) out.push(e.stat.isDirectory() ? `${e.path}/` : e.path);
  return out;
}

describe('selectFiles', () => {
  it('sends everything in lexical order with no patterns', async () => {
    expect(await select([])).toEqual([
      'Dockerfile', 'abs-link', 'docs/', 'docs/README.md', 'docs/guide.md', 'empty/', 'empty/.gitkeep', 'emptydir/',
      'link-to-a', 'node_modules/', 'node_modules/keep/', 'node_modules/keep/index.js', 'node_modules/x/',
      'node_modules/x/index.js', 'src/', 'src/a.ts', 'src/b.test.ts', 'src/deep/', 'src/deep/c.ts',
    ]);
  });

  it('includes only matches, with their parent directories', async () => {
    expect(await select(['src/deep/*.ts', 'Dockerfile'])).toEqual(['Dockerfile', 'src/', 'src/deep/', 'src/deep/c.ts']);
    expect(await select(['**/*.md'])).toEqual(['docs/', 'docs/README.md', 'docs/guide.md']);
  });

  it('a directory pattern includes the whole tree, even when empty', async () => {
    expect(await select(['docs', 'emptydir'])).toEqual(['docs/', 'docs/README.md', 'docs/guide.md', 'emptydir/']);
  });

  it('applies exclusions with ! exceptions, keeping needed parents', async () => {
    expect(await select(['node_modules', 'docs'], ['node_modules', '!node_modules/keep', 'docs/guide.md'])).toEqual([
      'docs/', 'docs/README.md', 'node_modules/', 'node_modules/keep/', 'node_modules/keep/index.js',
    ]);
  });

  it('applies every exclusion set (dockerignore, then the daemon’s)', async () => {
    expect(await select(['src'], ['**/*.test.ts'], ['src/deep'])).toEqual(['src/', 'src/a.ts']);
  });

  it('never walks an excluded directory without exceptions', async () => {
    chmodSync(join(root, 'node_modules'), 0o000);
    try {
      // Would fail with EACCES if it were read (when not root).
      expect(await select([], ['node_modules', 'src', 'docs', 'empty*', '*link*'])).toEqual(['Dockerfile']);
    } finally {
      chmodSync(join(root, 'node_modules'), 0o755);
    }
  });

  it('sends a socket as an empty regular file with its mode', async () => {
    const sockPath = join(root, 'socket.sock');
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(sockPath, resolve));
    try {
      chmodSync(sockPath, 0o600);
      const entries = [...selectFiles({ root, include: new PatternMatcher(['socket.sock', 'Dockerfile']), exclude: [] })];
      const tar: [string, string, number, number][] = [];
      for await (const { header, body } of readTarEntries(packSelected(root, entries))) {
        let size = 0;
        for await (const b of body) size += b.length;
        tar.push([header.name, header.type, header.mode, size]);
      }
      expect(tar).toEqual([
        ['Dockerfile', 'file', 0o644, 13],
        ['socket.sock', 'file', 0o600, 0],
      ]);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('keeps symlinks as links', async () => {
    const entries = selectFiles({ root, include: new PatternMatcher(['*link*']), exclude: [] });
    const got: [string, string | undefined][] = [];
    for await (const e of entries) got.push([e.path, e.linkname]);
    expect(got).toEqual([['abs-link', '/etc/passwd'], ['link-to-a', 'src/a.ts']]);
  });
});

describe('followLinks', () => {
  it('adds symlink targets, kept inside the root', async () => {
    symlinkSync('src', join(root, 'srclink'));
    symlinkSync('../../../outside', join(root, 'escape'));
    expect(await followLinks(root, ['link-to-a'])).toEqual(['link-to-a', 'src/a.ts']);
    expect(await followLinks(root, ['srclink/deep/c.ts'])).toEqual(['srclink/deep/c.ts', 'srclink', 'src/deep/c.ts']);
    expect(await followLinks(root, ['escape'])).toEqual(['escape', 'outside']);
    expect(await followLinks(root, ['abs-link'])).toEqual(['abs-link', 'etc/passwd']);
    expect(await followLinks(root, ['Dockerfile', 'missing'])).toEqual(['Dockerfile', 'missing']);
  });

  it('follows the symlinks a wildcard component matches, and only those', async () => {
    symlinkSync('src/deep', join(root, 'deeplink'));
    symlinkSync('docs', join(root, 'docslink'));
    expect(await followLinks(root, ['d*link/c.ts'])).toEqual(['d*link/c.ts', 'deeplink', 'src/deep/c.ts', 'docslink', 'docs/c.ts']);
    expect(await followLinks(root, ['sr*/a.ts'])).toEqual(['sr*/a.ts']);
  });

  it('literalPattern escapes glob characters', () => {
    expect(new PatternMatcher([literalPattern('a[1]*?.txt')]).matches('a[1]*?.txt')).toBe(true);
    expect(new PatternMatcher([literalPattern('a[1]*?.txt')]).matches('a1xx.txt')).toBe(false);
  });
});

describe('packSelected', () => {
  it('streams a tar with modes, mtimes and data in chunks of at most 64 KiB', async () => {
    const big = Buffer.alloc(200_000, 7);
    writeFileSync(join(root, 'src/big.bin'), big);
    chmodSync(join(root, 'src/a.ts'), 0o751);
    utimesSync(join(root, 'src/a.ts'), 1_600_000_000, 1_600_000_000);
    const entries = selectFiles({ root, include: new PatternMatcher(['src/a.ts', 'src/big.bin']), exclude: [] });
    const chunks: Uint8Array[] = [];
    for await (const c of packSelected(root, entries)) chunks.push(c);
    expect(chunks.every((c) => c.length <= CHUNK_BYTES)).toBe(true);
    expect(chunks.length).toBeGreaterThan(3);
    const got: Record<string, { mode: number; mtime: number; size: number }> = {};
    async function* replay() {
      yield* chunks;
    }
    for await (const { header, body } of readTarEntries(replay())) {
      let size = 0;
      for await (const b of body) size += b.length;
      got[header.name] = { mode: header.mode, mtime: header.mtime, size };
    }
    expect(got['src']?.mode).toBe(0o755);
    expect(got['src/a.ts']).toEqual({ mode: 0o751, mtime: 1_600_000_000, size: 1 });
    expect(got['src/big.bin']?.size).toBe(200_000);
  });
});
