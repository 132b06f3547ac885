import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readRefDir, readRefFile, statRefFile } from './ref-files.js';

describe('ref files (gateway reads of a result)', () => {
  let base: string;
  let root: string;
  beforeEach(() => {
    base = mkdtempSync(join(tmpdir(), 'kiln-ref-files-'));
    root = join(base, 'root');
    mkdirSync(join(root, 'etc'), { recursive: true });
    writeFileSync(join(root, 'etc/os-release'), 'NAME=kiln\nVERSION=1\n');
    writeFileSync(join(base, 'host-secret'), 'host only');
    symlinkSync('/etc/os-release', join(root, 'abs-link'));
    symlinkSync('../../host-secret', join(root, 'etc/escape'));
    mkdirSync(join(root, 'app'));
    for (const n of ['b.txt', 'a.txt', 'c.md']) writeFileSync(join(root, 'app', n), n);
  });
  afterEach(() => rmSync(base, { recursive: true, force: true }));

  it('reads byte ranges of a file, following links inside the root', () => {
    expect(readRefFile(root, '/etc/os-release', 0, 0).toString()).toBe('NAME=kiln\nVERSION=1\n');
    expect(readRefFile(root, 'etc/os-release', 5, 4).toString()).toBe('kiln');
    expect(readRefFile(root, '/abs-link', 0, 4).toString()).toBe('NAME');
  });

  it('never leaves the root through a planted symlink', () => {
    // ../../host-secret from /etc resolves to / inside the root, where there is no host-secret.
    expect(() => readRefFile(root, '/etc/escape', 0, 0)).toThrow(/no such file/);
  });

  it('stats without following the final link, and lists a directory with a pattern', () => {
    const st = statRefFile(root, '/abs-link');
    expect(st.linkname).toBe('/etc/os-release');
    expect(st.mode & 0o170000).toBe(0o120000);
    expect(statRefFile(root, '/etc/os-release').size).toBe(20n);
    expect(readRefDir(root, '/app', '').map((e) => e.path)).toEqual(['a.txt', 'b.txt', 'c.md']);
    expect(readRefDir(root, '/app', '*.txt').map((e) => e.path)).toEqual(['a.txt', 'b.txt']);
    expect(readRefDir(root, '/', '').map((e) => e.path)).toEqual(['abs-link', 'app', 'etc']);
  });

  it('gives clear errors for missing paths and wrong types', () => {
    expect(() => readRefFile(root, '/nope', 0, 0)).toThrow('/nope: no such file or directory');
    expect(() => readRefFile(root, '/app', 0, 0)).toThrow('/app is a directory');
    expect(() => readRefDir(root, '/etc/os-release', '')).toThrow('/etc/os-release is not a directory');
  });
});
