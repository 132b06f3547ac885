import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { detectArchive, unpackIfArchive } from './unpack.js';

const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'kiln-unpack-'));
  dirs.push(d);
  return d;
};
afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));

describe('ADD archive unpacking', () => {
  it.each([
    ['plain', [], 'none'],
    ['gzip', ['-z'], 'gzip'],
    ['xz', ['-J'], 'xz'],
    ['bzip2', ['-j'], 'bzip2'],
  ] as const)('extracts a %s tar made by GNU tar into the destination', async (_n, flags, kind) => {
    const src = tmp();
    const tree = join(src, 'tree');
    mkdirSync(join(tree, 'd'), { recursive: true });
    writeFileSync(join(tree, 'd', 'f.txt'), 'content\n');
    execFileSync('tar', ['-C', tree, ...flags, '-cf', join(src, 'a.tar'), 'd']);
    expect(detectArchive(join(src, 'a.tar'))).toBe(kind);
    const dest = tmp();
    expect(await unpackIfArchive(src, '/a.tar', dest, '/out/')).toBe(true);
    expect(readFileSync(join(dest, 'out', 'd', 'f.txt'), 'utf8')).toBe('content\n');
  });

  it('leaves other files to be copied, and keeps entries inside the destination', async () => {
    const src = tmp();
    writeFileSync(join(src, 'notes.txt'), 'not an archive, long enough to not be mistaken for anything at all\n'.repeat(10));
    const dest = tmp();
    expect(await unpackIfArchive(src, '/notes.txt', dest, '/out/')).toBe(false);
    const evil = join(src, 'evil');
    mkdirSync(evil);
    writeFileSync(join(evil, 'x'), 'x');
    execFileSync('tar', ['-C', evil, '--transform', 's,^x,../../escaped,', '-cPf', join(src, 'evil.tar'), 'x']);
    expect(await unpackIfArchive(src, '/evil.tar', dest, '/out/')).toBe(true);
    expect(existsSync(join(dest, '..', 'escaped'))).toBe(false);
  });
});
